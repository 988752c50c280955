// Per-task status records. Kernels never throw inside a parallel region: each
// task writes one Status, the binding returns them all after the region has ended,
// and the Python layer turns the first failure into an exception (or reports it).
#pragma once

#include <cstdint>

namespace fobmaml {

enum class Code : int {
  ok = 0,
  non_finite = 1,     // a NaN or Inf appeared
  diverged = 2,       // the inner gradient grew past the divergence bound
  not_pos_def = 3,    // d^2 g + lam I is not positive definite where it must be
  not_converged = 4,  // a solve to tolerance hit its iteration cap
};

// Which computation a status refers to.
enum class Stage : int {
  none = 0,
  inner_loop,       // phi_k, the unperturbed inner loop
  perturbed_plus,   // psi^{+s}
  perturbed_minus,  // psi^{-s}
  backward,         // the MAML / HF-MAML reverse recursion
  cg,               // conjugate gradient (IMAML, Exact)
  inner_solve,      // Exact: the inner problem solved to a tolerance
  direct_solve,     // Exact: the closed form of a quadratic task
  query,            // query loss / gradient at the adapted point
  curvature_probe,  // Exact: Lanczos probe of the smallest eigenvalue of d^2 g + lam I
  output,           // the estimate or loss an estimator returns (e.g. lam / delta overflowed)
};

struct Status {
  Code code = Code::ok;
  Stage stage = Stage::none;
  std::int64_t step = -1;  // 1-based step of the failing computation, -1 if not applicable
  double value = 0.0;      // extra information (e.g. a curvature or residual), 0 if unused

  bool ok() const { return code == Code::ok; }
  static Status failure(Code c, Stage s, std::int64_t k, double v = 0.0) {
    Status st;
    st.code = c;
    st.stage = s;
    st.step = k;
    st.value = v;
    return st;
  }
};

}  // namespace fobmaml
