// The inner loop: K steps of heavy-ball gradient descent on the proximal problem
//   h(phi; x) = g(phi) + lam/2 ||phi - x||^2,
//   phi_{-1} = phi_0 = x,
//   phi_{k+1} = phi_k - lr (grad g(phi_k) + lam (phi_k - x)) + beta (phi_k - phi_{k-1}),
// run on a block of p columns at once (one pass over the task data per step).
// Column j may carry a perturbation of its objective (FO-B-MAML):
//   objective: + s_j f(phi)        -> gradient + s_j grad f(phi)
//   linear:    + t_j <v, phi>      -> gradient + t_j v
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

#include "status.hpp"
#include "types.hpp"

namespace fobmaml {

// Columns run together in one inner loop (FO-B-MAML needs at most three: phi, psi+, psi-).
constexpr Index kMaxColumns = 3;

// A step is declared divergent when the norm of the inner gradient exceeds this
// factor times (1 + its norm at the start). Gradient descent on a convex inner
// problem with a stable step size never increases it.
constexpr double kDivergenceFactor = 1e8;

// True if every entry of v is finite. A vectorized sum of |v_i| is NaN or Inf exactly
// when some entry is (or when it overflows, past 1e308 in total: a divergence too);
// Eigen's allFinite() runs a scalar loop with a branch per entry.
template <class V>
bool is_finite(const V& v) {
  return std::isfinite(v.cwiseAbs().sum());
}

struct ColumnSpec {
  double obj = 0.0;  // s_j: weight of the query loss added to the inner objective
  double lin = 0.0;  // t_j: weight of the linear term <v, phi>
  Stage stage = Stage::inner_loop;
};

struct InnerBlock {
  Index cols = 1;
  std::array<ColumnSpec, kMaxColumns> spec{};
  const Vec* v = nullptr;  // the linear-perturbation vector, if any column uses one
};

// Scratch for the block iteration; sized once per thread.
struct InnerScratch {
  Mat prev, grad, extra;
  void resize(Index n, Index p) {
    prev.resize(n, p);
    grad.resize(n, p);
    extra.resize(n, p);
  }
};

// Runs `steps` iterations of the inner loop on the block `Phi` (n x cols), starting
// every column at x. If `trajectory` is non-null (only with cols == 1) its column k
// receives phi_k, k = 0..steps-1, as the MAML backward pass needs them.
// With tol > 0 the loop instead stops as soon as every column satisfies
// ||grad h(phi_k)|| <= tol ||grad h(x)||, and fails with not_converged if `steps`
// iterations do not get there (the Exact estimator's inner solve).
template <class Family>
Status run_inner_loop(const Family& fam, Index task, const Vec& x, const InnerConfig& cfg, std::int64_t steps,
                      const InnerBlock& blk, Eigen::Ref<Mat> Phi, InnerScratch& s,
                      typename Family::Workspace& fws, Mat* trajectory = nullptr, double tol = 0.0) {
  const Index p = blk.cols;
  auto phi = Phi.leftCols(p);
  auto prev = s.prev.leftCols(p);
  auto grad = s.grad.leftCols(p);
  auto extra = s.extra.leftCols(p);
  phi.colwise() = x;
  prev = phi;

  // The query gradient is needed only for the columns with an objective perturbation;
  // callers put them first, so it is computed on the leading `n_obj` columns only.
  Index n_obj = 0;
  bool any_lin = false;
  for (Index j = 0; j < p; ++j) {
    if (blk.spec[j].obj != 0.0) n_obj = j + 1;
    any_lin = any_lin || blk.spec[j].lin != 0.0;
  }
  const bool any_obj = n_obj > 0;
  std::array<double, kMaxColumns> obj{};
  for (Index j = 0; j < p; ++j) obj[j] = blk.spec[j].obj;
  std::array<double, kMaxColumns> start_norm{};

  for (std::int64_t k = 0; k < steps; ++k) {
    if (trajectory) trajectory->col(k) = phi.col(0);
    bool combined = false;
    if constexpr (Family::has_combined_grad) {
      if (any_obj) {
        // grad g + s_j grad f in one pass per column; the rest plain support gradients.
        fam.combined_grad(task, phi.leftCols(n_obj), obj.data(), grad.leftCols(n_obj), fws);
        if (n_obj < p) fam.support_grad(task, phi.rightCols(p - n_obj), grad.rightCols(p - n_obj), fws);
        combined = true;
      }
    }
    if (!combined) {
      fam.support_grad(task, phi, grad, fws);
      if (any_obj) {
        if (fam.query_is_support()) {
          for (Index j = 0; j < p; ++j) grad.col(j) *= 1.0 + blk.spec[j].obj;
        } else {
          fam.query_grad(task, phi.leftCols(n_obj), extra.leftCols(n_obj), fws);
          for (Index j = 0; j < n_obj; ++j)
            if (blk.spec[j].obj != 0.0) grad.col(j) += blk.spec[j].obj * extra.col(j);
        }
      }
    }
    if (any_lin)
      for (Index j = 0; j < p; ++j)
        if (blk.spec[j].lin != 0.0) grad.col(j) += blk.spec[j].lin * (*blk.v);
    if (cfg.lam != 0.0)  // column by column: a replicate() of x is indexed with a division per entry
      for (Index j = 0; j < p; ++j) grad.col(j) += cfg.lam * (phi.col(j) - x);

    bool converged = tol > 0.0;
    for (Index j = 0; j < p; ++j) {
      const double nrm = grad.col(j).norm();
      if (!std::isfinite(nrm)) return Status::failure(Code::non_finite, blk.spec[j].stage, k + 1);
      if (k == 0) start_norm[j] = nrm;
      if (nrm > kDivergenceFactor * (1.0 + start_norm[j]))
        return Status::failure(Code::diverged, blk.spec[j].stage, k + 1, nrm);
      converged = converged && nrm <= tol * start_norm[j];
    }
    if (converged) return Status{};

    // phi_{k+1} = phi_k - lr grad + beta (phi_k - phi_{k-1}); `extra` holds the step.
    if (cfg.momentum != 0.0) {
      extra = cfg.momentum * (phi - prev) - cfg.lr * grad;
      prev = phi;
      phi += extra;
    } else {
      phi -= cfg.lr * grad;
    }
    for (Index j = 0; j < p; ++j)
      if (!is_finite(phi.col(j))) return Status::failure(Code::non_finite, blk.spec[j].stage, k + 1);
  }
  if (tol > 0.0) return Status::failure(Code::not_converged, blk.spec[0].stage, steps);
  return Status{};
}

}  // namespace fobmaml
