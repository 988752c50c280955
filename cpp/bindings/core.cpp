// fobmaml._core: the module definition. The task families are bound in their own
// translation units (quadratic.cpp, mlp.cpp), which share common.hpp; pybind11 is
// included only under cpp/bindings/. Arguments are checked there, outputs are
// allocated there, and the GIL is released while the kernels run.
#include <pybind11/pybind11.h>

#include <string>

#include "common.hpp"
#include "fobmaml/batch.hpp"
#include "fobmaml/estimators.hpp"
#include "fobmaml/types.hpp"

namespace py = pybind11;
using namespace fobmaml;

namespace {

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
      .def_readwrite("solver", &EstimatorConfig::solver)
      .def_readwrite("pd_check_steps", &EstimatorConfig::pd_check_steps);

  bindings::bind_quadratic(m);
  bindings::bind_mlp(m);

  m.def(
      "workspace_bytes",
      [](Index n, const EstimatorConfig& cfg) { return predicted_workspace_bytes(n, cfg); }, py::arg("n"),
      py::arg("config"), "Bytes of one thread's estimator workspace for dimension n.");

  m.def("max_threads", &max_threads);
  m.def("set_num_threads", &fobmaml::set_num_threads, py::arg("k"),
        "Threads used by the kernels: k > 0 exactly (at most one per task), 0 automatic. Returns the "
        "previous setting.");
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
                        "inner_solve", "direct_solve", "query", "curvature_probe"})
    stages.append(s);
  m.attr("STATUS_CODES") = codes;
  m.attr("STATUS_STAGES") = stages;
}
