// Helpers shared by the binding translation units: argument checks, the status
// arrays, and the estimate/adapt entry points, templated on a task-batch handle
// (a struct holding the family as `fam` and keeping its NumPy arrays alive).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>  // in every binding TU alike: type casters must agree across TUs

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "fobmaml/batch.hpp"
#include "fobmaml/status.hpp"
#include "fobmaml/types.hpp"

namespace fobmaml::bindings {

namespace py = pybind11;

using Array = py::array_t<double, py::array::c_style>;
using IntArray = py::array_t<std::int64_t, py::array::c_style>;

inline std::string shape_str(const py::array& a) {
  std::ostringstream os;
  os << "(";
  for (py::ssize_t d = 0; d < a.ndim(); ++d) os << (d ? ", " : "") << a.shape(d);
  os << (a.ndim() == 1 ? ",)" : ")");
  return os.str();
}

inline void require_shape(const py::array& a, const char* name, std::initializer_list<py::ssize_t> shape) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  py::ssize_t d = 0;
  for (auto s : shape) ok = ok && a.shape(d++) == s;
  if (!ok) {
    std::ostringstream os;
    os << "`" << name << "` must have shape (";
    d = 0;
    for (auto s : shape) os << (d++ ? ", " : "") << s;
    os << (shape.size() == 1 ? ",)" : ")") << " (got " << shape_str(a) << ")";
    throw py::value_error(os.str());
  }
}

inline py::tuple status_arrays(const std::vector<Status>& st) {
  const py::ssize_t m = static_cast<py::ssize_t>(st.size());
  py::array_t<int> code(m), stage(m);
  py::array_t<std::int64_t> step(m);
  py::array_t<double> value(m);
  for (py::ssize_t i = 0; i < m; ++i) {
    code.mutable_at(i) = static_cast<int>(st[i].code);
    stage.mutable_at(i) = static_cast<int>(st[i].stage);
    step.mutable_at(i) = st[i].step;
    value.mutable_at(i) = st[i].value;
  }
  return py::make_tuple(code, stage, step, value);
}

// (G (m, n), mean over good tasks (n,), losses (m,) or None, status arrays).
template <class Handle>
py::tuple estimate(const Handle& h, const Array& x, const EstimatorConfig& cfg, bool want_loss) {
  const auto& fam = h.fam;
  const Index m = fam.num_tasks(), n = fam.dim();
  require_shape(x, "x", {n});
  Array G({m, n}), g({n}), losses(want_loss ? m : 0);
  std::vector<Status> st(static_cast<std::size_t>(m));
  {
    py::gil_scoped_release release;
    Eigen::Map<const Vec> xv(x.data(), n);
    double* ell = want_loss ? losses.mutable_data() : nullptr;
    estimate_batch(fam, xv, cfg, G.mutable_data(), ell, st.data());
    finish_batch(G.mutable_data(), ell, st.data(), m, n, g.mutable_data());
  }
  return py::make_tuple(G, g, want_loss ? py::object(losses) : py::none(), status_arrays(st));
}

// The batch estimate from per-task rows computed elsewhere (other processes or machines):
// finish_batch on them, exactly as estimate() reduces its own rows. G (m, n) and losses (m,)
// are modified in place (rows and losses of failed tasks become NaN); code holds the status
// codes (m,). Returns the mean over the successful tasks (n,).
inline Array finish(Array G, std::optional<Array> losses, const py::array_t<int, py::array::c_style>& code) {
  if (G.ndim() != 2) throw py::value_error("`G` must have shape (m, n) (got " + shape_str(G) + ")");
  const py::ssize_t m = G.shape(0), n = G.shape(1);
  if (!G.writeable()) throw py::value_error("`G` must be writeable (it is finished in place)");
  require_shape(code, "code", {m});
  if (losses) {
    require_shape(*losses, "losses", {m});
    if (!losses->writeable()) throw py::value_error("`losses` must be writeable (finished in place)");
  }
  std::vector<Status> st(static_cast<std::size_t>(m));
  for (py::ssize_t i = 0; i < m; ++i) st[static_cast<std::size_t>(i)].code = static_cast<Code>(code.at(i));
  Array g({n});
  {
    py::gil_scoped_release release;
    finish_batch(G.mutable_data(), losses ? losses->mutable_data() : nullptr, st.data(), m, n,
                 g.mutable_data());
  }
  return g;
}

// (phi_K (m, n) or None, f_i(phi_K) (m,), query accuracy (m,), status arrays); NaN for failed tasks.
template <class Handle>
py::tuple adapt(const Handle& h, const Array& x, const InnerConfig& inner, bool want_phi) {
  const auto& fam = h.fam;
  const Index m = fam.num_tasks(), n = fam.dim();
  require_shape(x, "x", {n});
  Array Phi(want_phi ? std::vector<py::ssize_t>{m, n} : std::vector<py::ssize_t>{0, n});
  Array losses(m), accuracy(m);
  std::vector<Status> st(static_cast<std::size_t>(m));
  {
    py::gil_scoped_release release;
    Eigen::Map<const Vec> xv(x.data(), n);
    adapt_batch(fam, xv, inner, want_phi ? Phi.mutable_data() : nullptr, losses.mutable_data(),
                accuracy.mutable_data(), st.data());
    const double nan = std::numeric_limits<double>::quiet_NaN();
    for (Index i = 0; i < m; ++i)
      if (!st[static_cast<std::size_t>(i)].ok()) {
        losses.mutable_data()[i] = nan;
        accuracy.mutable_data()[i] = nan;
        if (want_phi) std::fill_n(Phi.mutable_data() + i * n, n, nan);
      }
  }
  return py::make_tuple(want_phi ? py::object(Phi) : py::none(), losses, accuracy, status_arrays(st));
}

// (losses (m,), gradients (m, n), HVPs (m, n) or None) of the support or query loss at
// the rows of Phi, HVPs with the rows of V if given.
template <class Handle>
py::tuple family_eval(const Handle& h, bool query, const Array& Phi, const std::optional<Array>& V) {
  const auto& fam = h.fam;
  const Index m = fam.num_tasks(), n = fam.dim();
  require_shape(Phi, "phi", {m, n});
  if (V) require_shape(*V, "v", {m, n});
  Array losses(m), G({m, n}), HV(V ? std::vector<py::ssize_t>{m, n} : std::vector<py::ssize_t>{0, n});
  {
    py::gil_scoped_release release;
    family_batch(fam, query, Phi.data(), V ? V->data() : nullptr, losses.mutable_data(), G.mutable_data(),
                 V ? HV.mutable_data() : nullptr);
  }
  return py::make_tuple(losses, G, V ? py::object(HV) : py::none());
}

// Registers estimate/adapt for one family (pybind11 chains the overloads by handle type).
template <class Handle>
void def_entry_points(py::module_& m) {
  m.def("estimate", &estimate<Handle>, py::arg("tasks"), py::arg("x"), py::arg("config"),
        py::arg("want_loss") = false,
        "Per-task estimates G (m, n), their mean over the successful tasks (n,), per-task losses or "
        "None, and the status arrays (code, stage, step, value).");
  m.def("adapt", &adapt<Handle>, py::arg("tasks"), py::arg("x"), py::arg("inner"), py::arg("want_phi") = true,
        "phi_K per task (m, n) or None, f_i(phi_K) (m,), the query accuracy (m,; NaN without "
        "classes), and the status arrays. inner.steps = 0 evaluates at x.");
  m.def(
      "workspace_bytes",
      [](const Handle& h, const EstimatorConfig& cfg) { return batch_workspace_bytes(h.fam, cfg); },
      py::arg("tasks"), py::arg("config"),
      "Bytes of workspace an estimate() call on these tasks allocates (all threads), predicted.");
  m.def("family_eval", &family_eval<Handle>, py::arg("tasks"), py::arg("query"), py::arg("phi"),
        py::arg("v") = py::none(),
        "Per-task loss (m,), gradient (m, n) and, if v is given, HVP (m, n) of the support or query loss.");
}

void bind_quadratic(py::module_& m);
void bind_net(py::module_& m);
void bind_bench(py::module_& m);

}  // namespace fobmaml::bindings
