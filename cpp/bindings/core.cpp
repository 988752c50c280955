// fobmaml._core: the module definition. The task families are bound in their own
// translation units (quadratic.cpp, net.cpp), which share common.hpp; pybind11 is
// included only under cpp/bindings/. Arguments are checked there, outputs are
// allocated there, and the GIL is released while the kernels run.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>

#include "common.hpp"
#include "fobmaml/batch.hpp"
#include "fobmaml/estimators.hpp"
#include "fobmaml/status.hpp"
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

#ifndef FOBMAML_MODULE
#define FOBMAML_MODULE _core
#endif

PYBIND11_MODULE(FOBMAML_MODULE, m) {
  m.doc() = "fobmaml C++ kernels (private; use the fobmaml package)";

  py::enum_<Kind>(m, "Kind", py::module_local())
      .value("maml", Kind::maml)
      .value("fomaml", Kind::fomaml)
      .value("reptile", Kind::reptile)
      .value("imaml", Kind::imaml)
      .value("hfmaml", Kind::hfmaml)
      .value("fobmaml", Kind::fobmaml)
      .value("exact", Kind::exact);
  py::enum_<Scheme>(m, "Scheme", py::module_local())
      .value("forward", Scheme::forward)
      .value("symmetric", Scheme::symmetric);
  py::enum_<Perturbation>(m, "Perturbation", py::module_local())
      .value("objective", Perturbation::objective)
      .value("linear", Perturbation::linear);
  py::enum_<ExactSolver>(m, "ExactSolver", py::module_local())
      .value("auto", ExactSolver::automatic)
      .value("iterative", ExactSolver::iterative);

  py::class_<InnerConfig>(m, "InnerConfig", py::module_local())
      .def(py::init<>())
      .def_readwrite("steps", &InnerConfig::steps)
      .def_readwrite("lr", &InnerConfig::lr)
      .def_readwrite("lam", &InnerConfig::lam)
      .def_readwrite("momentum", &InnerConfig::momentum);

  py::class_<EstimatorConfig>(m, "EstimatorConfig", py::module_local())
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
  bindings::bind_net(m);
  bindings::bind_bench(m);

  m.def("finish_batch", &bindings::finish, py::arg("G").noconvert(), py::arg("losses").noconvert(),
        py::arg("code"),
        "The mean over the successful tasks of the rows of G (m, n), summed in task order, as estimate() "
        "reduces its own rows (finish_batch); the rows and losses of failed tasks (code != ok) become NaN "
        "in place.");
  m.def("max_threads", &max_threads);
  m.def("set_num_threads", &fobmaml::set_num_threads, py::arg("k"),
        "Threads used by the kernels: k > 0 exactly (at most one per task), 0 automatic. Returns the "
        "previous setting.");
  m.def(
      "stream_triad",
      [](Index n, int reps, int threads) {
        // STREAM's triad a = b + s c over three arrays of n doubles, on `threads` threads
        // (0: the kernels' setting). Returns the best of `reps` runs in GB/s, counting 24
        // bytes per element as STREAM does (the write-allocate read of a is not counted).
        if (n < 1 || reps < 1) throw py::value_error("`n` and `reps` must be >= 1");
        Vec a(n), b = Vec::Constant(n, 1.0), c = Vec::Constant(n, 2.0);
        const int t = threads > 0 ? threads : max_threads();
        double best = 0.0;
        {
          py::gil_scoped_release release;
#pragma omp parallel for num_threads(t) schedule(static)
          for (Index i = 0; i < n; ++i) a[i] = 0.0;  // first touch by the threads that use it
          for (int r = 0; r < reps; ++r) {
            const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel for num_threads(t) schedule(static)
            for (Index i = 0; i < n; ++i) a[i] = b[i] + 3.0 * c[i];
            const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            best = std::max(best, 24.0 * static_cast<double>(n) / s / 1e9);
          }
        }
        if (a[n / 2] != 7.0) throw std::runtime_error("stream_triad: wrong result");
        return best;
      },
      py::arg("n"), py::arg("reps") = 10, py::arg("threads") = 0,
      "STREAM triad bandwidth in GB/s (best of reps), measured with the kernels' compiler flags.");
  m.def("cpu_features", [] {
    py::dict d;
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    d["avx2"] = static_cast<bool>(__builtin_cpu_supports("avx2"));
    d["fma"] = static_cast<bool>(__builtin_cpu_supports("fma"));
    d["avx512f"] = static_cast<bool>(__builtin_cpu_supports("avx512f"));
#endif
    return d;
  });
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

  // The per-task status vocabulary of status.hpp, bound as enums: each name is tied to its
  // enumerator, so Python reads codes and stages from the header, not from a parallel list.
  py::enum_<Code>(m, "Code", py::module_local())
      .value("ok", Code::ok)
      .value("non_finite", Code::non_finite)
      .value("diverged", Code::diverged)
      .value("not_pos_def", Code::not_pos_def)
      .value("not_converged", Code::not_converged);
  py::enum_<Stage>(m, "Stage", py::module_local())
      .value("none", Stage::none)
      .value("inner_loop", Stage::inner_loop)
      .value("perturbed_plus", Stage::perturbed_plus)
      .value("perturbed_minus", Stage::perturbed_minus)
      .value("backward", Stage::backward)
      .value("cg", Stage::cg)
      .value("inner_solve", Stage::inner_solve)
      .value("direct_solve", Stage::direct_solve)
      .value("query", Stage::query)
      .value("curvature_probe", Stage::curvature_probe)
      .value("output", Stage::output);
}
