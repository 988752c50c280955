// fobmaml._core: the only translation unit that includes pybind11.
// Arguments are checked here (dtype, contiguity, shapes), outputs are allocated
// here, and the GIL is released while the kernels run.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "fobmaml/batch.hpp"
#include "fobmaml/estimators.hpp"
#include "fobmaml/status.hpp"
#include "fobmaml/tasks/quadratic.hpp"
#include "fobmaml/types.hpp"

namespace py = pybind11;
using namespace fobmaml;

namespace {

using Array = py::array_t<double, py::array::c_style>;

std::string shape_str(const py::array& a) {
  std::ostringstream os;
  os << "(";
  for (py::ssize_t d = 0; d < a.ndim(); ++d) os << (d ? ", " : "") << a.shape(d);
  os << (a.ndim() == 1 ? ",)" : ")");
  return os.str();
}

void require_shape(const py::array& a, const char* name, std::initializer_list<py::ssize_t> shape) {
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

// A quadratic task batch that keeps the NumPy arrays it reads alive.
struct QuadraticHandle {
  Array A, b, B, c;
  QuadraticTasks fam;

  static QuadraticTasks make(const Array& A, const Array& b, const std::optional<Array>& B,
                             const std::optional<Array>& c) {
    if (A.ndim() != 3 || A.shape(1) != A.shape(2))
      throw py::value_error("`A` must have shape (m, n, n) (got " + shape_str(A) + ")");
    const py::ssize_t m = A.shape(0), n = A.shape(1);
    require_shape(b, "b", {m, n});
    if (B.has_value() != c.has_value()) throw py::value_error("`B` and `c` must be given together");
    if (B) {
      require_shape(*B, "B", {m, n, n});
      require_shape(*c, "c", {m, n});
    }
    return QuadraticTasks(A.data(), b.data(), B ? B->data() : nullptr, c ? c->data() : nullptr, m, n);
  }

  QuadraticHandle(Array A_, Array b_, std::optional<Array> B_, std::optional<Array> c_)
      : A(A_), b(b_), B(B_ ? *B_ : Array()), c(c_ ? *c_ : Array()), fam(make(A_, b_, B_, c_)) {}
};

py::tuple status_arrays(const std::vector<Status>& st) {
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

template <class Handle>
py::tuple adapt(const Handle& h, const Array& x, const InnerConfig& inner, bool want_phi) {
  const auto& fam = h.fam;
  const Index m = fam.num_tasks(), n = fam.dim();
  require_shape(x, "x", {n});
  Array Phi(want_phi ? std::vector<py::ssize_t>{m, n} : std::vector<py::ssize_t>{0, n});
  Array losses(m);
  std::vector<Status> st(static_cast<std::size_t>(m));
  {
    py::gil_scoped_release release;
    Eigen::Map<const Vec> xv(x.data(), n);
    adapt_batch(fam, xv, inner, want_phi ? Phi.mutable_data() : nullptr, losses.mutable_data(), st.data());
    const double nan = std::numeric_limits<double>::quiet_NaN();
    for (Index i = 0; i < m; ++i)
      if (!st[static_cast<std::size_t>(i)].ok()) {
        losses.mutable_data()[i] = nan;
        if (want_phi) std::fill_n(Phi.mutable_data() + i * n, n, nan);
      }
  }
  return py::make_tuple(want_phi ? py::object(Phi) : py::none(), losses, status_arrays(st));
}

std::string compiler() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("gcc ") + __VERSION__;
#elif defined(_MSC_VER)
  return "msvc " + std::to_string(_MSC_VER);
#else
  return "unknown";
#endif
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "fobmaml C++ kernels (private; use the fobmaml package)";

  py::enum_<Kind>(m, "Kind")
      .value("maml", Kind::maml)
      .value("fomaml", Kind::fomaml)
      .value("reptile", Kind::reptile)
      .value("imaml", Kind::imaml)
      .value("hfmaml", Kind::hfmaml)
      .value("fobmaml", Kind::fobmaml)
      .value("exact", Kind::exact);
  py::enum_<Scheme>(m, "Scheme").value("forward", Scheme::forward).value("symmetric", Scheme::symmetric);
  py::enum_<Perturbation>(m, "Perturbation")
      .value("objective", Perturbation::objective)
      .value("linear", Perturbation::linear);
  py::enum_<ExactSolver>(m, "ExactSolver")
      .value("auto", ExactSolver::automatic)
      .value("iterative", ExactSolver::iterative);

  py::class_<InnerConfig>(m, "InnerConfig")
      .def(py::init<>())
      .def_readwrite("steps", &InnerConfig::steps)
      .def_readwrite("lr", &InnerConfig::lr)
      .def_readwrite("lam", &InnerConfig::lam)
      .def_readwrite("momentum", &InnerConfig::momentum);

  py::class_<EstimatorConfig>(m, "EstimatorConfig")
      .def(py::init<>())
      .def_readwrite("kind", &EstimatorConfig::kind)
      .def_readwrite("inner", &EstimatorConfig::inner)
      .def_readwrite("delta", &EstimatorConfig::delta)
      .def_readwrite("scheme", &EstimatorConfig::scheme)
      .def_readwrite("perturbation", &EstimatorConfig::perturbation)
      .def_readwrite("cg_steps", &EstimatorConfig::cg_steps)
      .def_readwrite("eps", &EstimatorConfig::eps)
      .def_readwrite("tol", &EstimatorConfig::tol)
      .def_readwrite("max_iter", &EstimatorConfig::max_iter)
      .def_readwrite("solver", &EstimatorConfig::solver);

  py::class_<QuadraticHandle>(m, "QuadraticTasks")
      .def(py::init<Array, Array, std::optional<Array>, std::optional<Array>>(), py::arg("A"), py::arg("b"),
           py::arg("B") = py::none(), py::arg("c") = py::none())
      .def_property_readonly("num_tasks", [](const QuadraticHandle& h) { return h.fam.num_tasks(); })
      .def_property_readonly("dim", [](const QuadraticHandle& h) { return h.fam.dim(); });

  m.def("estimate", &estimate<QuadraticHandle>, py::arg("tasks"), py::arg("x"), py::arg("config"),
        py::arg("want_loss") = false,
        "Per-task estimates G (m, n), their mean (n,), per-task losses or None, and the status arrays "
        "(code, stage, step, value).");
  m.def("adapt", &adapt<QuadraticHandle>, py::arg("tasks"), py::arg("x"), py::arg("inner"),
        py::arg("want_phi") = true, "phi_K per task (m, n) or None, f_i(phi_K) (m,), and the status arrays.");

  m.def(
      "workspace_bytes",
      [](Index n, const EstimatorConfig& cfg) { return predicted_workspace_bytes(n, cfg); }, py::arg("n"),
      py::arg("config"), "Bytes of one thread's estimator workspace for dimension n.");

  m.def("max_threads", &max_threads);
  m.def("set_num_threads", &fobmaml::set_num_threads, py::arg("k"),
        "Threads used by the kernels: k > 0 exactly (at most one per task), 0 automatic.");
  m.def("build_info", [] {
    py::dict d;
    d["compiler"] = compiler();
#ifdef _OPENMP
    d["openmp"] = true;
    d["openmp_version"] = _OPENMP;
#else
    d["openmp"] = false;
    d["openmp_version"] = 0;
#endif
    d["max_threads"] = max_threads();
    d["eigen_version"] = std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) +
                         "." + std::to_string(EIGEN_MINOR_VERSION);
    d["simd"] = std::string(Eigen::SimdInstructionSetsInUse());
    return d;
  });

  py::list codes, stages;
  for (const char* s : {"ok", "non_finite", "diverged", "not_pos_def", "not_converged"}) codes.append(s);
  for (const char* s : {"none", "inner_loop", "perturbed_plus", "perturbed_minus", "backward", "cg",
                        "inner_solve", "direct_solve", "query"})
    stages.append(s);
  m.attr("STATUS_CODES") = codes;
  m.attr("STATUS_STAGES") = stages;
}
