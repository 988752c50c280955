// Per-task meta-gradient estimators (docs/estimators.md, "Estimators"). Each one is
// written once, against the task-family interface that is_task_family checks:
//   num_tasks(), dim(), query_is_support(), gradient_flops(),
//   make_workspace(FamilyOptions), workspace_bytes(FamilyOptions),
//   support_loss / query_loss(i, phi, ws),
//   support_grad / query_grad(i, Phi (n x p), G (n x p), ws),
//   support_hvp / query_hvp(i, phi, v, out, ws), query_accuracy(i, phi, ws) (NaN without
//   classes), has_combined_grad and, if true, combined_grad(i, Phi, s, G, ws) (grad g + s_j
//   grad f per column), has_direct_solve and, if true, direct_exact(i, x, lam, phi*, grad,
//   &loss, ws).
#pragma once

#include <cmath>
#include <cstddef>
#include <type_traits>
#include <utility>

#include "cg.hpp"
#include "inner_loop.hpp"
#include "lanczos.hpp"
#include "status.hpp"
#include "types.hpp"

namespace fobmaml {

// Detects the task-family interface above, so that a family that lacks a member fails
// with one clear message instead of deep inside a template.
template <class F, class = void>
struct is_task_family : std::false_type {};

template <class F>
struct is_task_family<
    F, std::void_t<decltype(std::declval<const F&>().num_tasks()), decltype(std::declval<const F&>().dim()),
                   decltype(std::declval<const F&>().query_is_support()),
                   decltype(std::declval<const F&>().gradient_flops()),
                   decltype(std::declval<const F&>().workspace_bytes(std::declval<const FamilyOptions&>())),
                   decltype(std::declval<const F&>().make_workspace(std::declval<const FamilyOptions&>())),
                   decltype(std::declval<const F&>().support_loss(Index{}, std::declval<VecIn>(),
                                                                  std::declval<typename F::Workspace&>())),
                   decltype(std::declval<const F&>().query_loss(Index{}, std::declval<VecIn>(),
                                                                std::declval<typename F::Workspace&>())),
                   decltype(std::declval<const F&>().support_grad(Index{}, std::declval<BlockIn>(),
                                                                  std::declval<BlockOut>(),
                                                                  std::declval<typename F::Workspace&>())),
                   decltype(std::declval<const F&>().query_grad(Index{}, std::declval<BlockIn>(),
                                                                std::declval<BlockOut>(),
                                                                std::declval<typename F::Workspace&>())),
                   decltype(std::declval<const F&>().support_hvp(
                       Index{}, std::declval<VecIn>(), std::declval<VecIn>(), std::declval<VecOut>(),
                       std::declval<typename F::Workspace&>())),
                   decltype(std::declval<const F&>().query_hvp(Index{}, std::declval<VecIn>(),
                                                               std::declval<VecIn>(), std::declval<VecOut>(),
                                                               std::declval<typename F::Workspace&>())),
                   decltype(std::declval<const F&>().query_accuracy(Index{}, std::declval<VecIn>(),
                                                                    std::declval<typename F::Workspace&>())),
                   decltype(F::has_combined_grad), decltype(F::has_direct_solve)>> : std::true_type {};

template <class F>
inline constexpr bool is_task_family_v = is_task_family<F>::value;

namespace detail {
inline Eigen::Map<const Mat> as_block(const Vec& v) { return Eigen::Map<const Mat>(v.data(), v.size(), 1); }
inline Eigen::Map<Mat> as_block(Vec& v) { return Eigen::Map<Mat>(v.data(), v.size(), 1); }
}  // namespace detail

// What an estimator asks of the family's workspace.
inline FamilyOptions family_options(const EstimatorConfig& cfg, int column_threads) {
  FamilyOptions opt;
  opt.hvp = cfg.kind == Kind::maml || cfg.kind == Kind::imaml || cfg.kind == Kind::exact;
  opt.exact_direct = cfg.kind == Kind::exact && cfg.solver == ExactSolver::automatic;
  opt.column_threads = column_threads;
  return opt;
}

// Columns of the largest block an estimator iterates at once: phi, psi+ and psi- run
// together (FO-B-MAML), or the pair phi +- eps v (HF-MAML). Column threads beyond it idle.
inline int block_columns(const EstimatorConfig& cfg) {
  switch (cfg.kind) {
    case Kind::fobmaml:
      return cfg.scheme == Scheme::symmetric && cfg.perturbation == Perturbation::objective ? 3 : 2;
    case Kind::hfmaml:
      return 2;
    default:
      return 1;
  }
}

// The estimators' own buffers (the family's come on top of them, see TaskWorkspace).
struct EstimatorBuffers {
  InnerScratch inner;
  CGScratch cg;
  LanczosScratch lanczos;
  Mat block;          // n x 3: phi, psi+, psi- iterated together
  Mat traj;           // n x K: phi_0..phi_{K-1} (MAML, HF-MAML only)
  Mat fd_in, fd_out;  // n x 2: HF-MAML's phi +- eps v and their gradients
  Vec base, v, a_next, a_next2, a_cur, hv, acc;
  Vec out;  // the task's estimate, computed here and then copied to the caller's row

  // The one description of the buffers and their shapes (n: the parameter dimension). The
  // TaskWorkspace constructor allocates them with it; predicted_bytes adds them up.
  template <class Visit>
  void layout(Index n, const EstimatorConfig& cfg, Visit&& visit) {
    for (Mat* M : {&inner.prev, &inner.grad, &inner.extra, &block}) visit(*M, n, kMaxColumns);
    for (Vec* w : {&base, &v, &a_next, &a_next2, &a_cur, &hv, &acc, &out}) visit(*w, n, 1);
    if (cfg.kind == Kind::imaml || cfg.kind == Kind::exact)
      for (Vec* w : {&cg.r, &cg.p, &cg.Mp}) visit(*w, n, 1);
    if (cfg.kind == Kind::exact && cfg.pd_check_steps > 0) {
      for (Vec* w : {&lanczos.q_prev, &lanczos.q, &lanczos.w}) visit(*w, n, 1);
      for (Vec* w : {&lanczos.alpha, &lanczos.beta}) visit(*w, cfg.pd_check_steps, 1);
    }
    if (cfg.kind == Kind::maml || cfg.kind == Kind::hfmaml) visit(traj, n, cfg.inner.steps);
    if (cfg.kind == Kind::hfmaml)
      for (Mat* M : {&fd_in, &fd_out}) visit(*M, n, 2);
  }
};

// Everything one thread needs to run any estimator on any task of a family.
// Sized once, before the parallel region; nothing is allocated per task or per step.
template <class Family>
struct TaskWorkspace : EstimatorBuffers {
  static_assert(is_task_family_v<Family>,
                "Family does not implement the task-family interface (estimators.hpp)");

  typename Family::Workspace fam;

  TaskWorkspace(const Family& f, const EstimatorConfig& cfg, int column_threads = 1)
      : fam(f.make_workspace(family_options(cfg, column_threads))) {
    layout(f.dim(), cfg, [](auto& buffer, Index rows, Index cols) { buffer.resize(rows, cols); });
  }

  // Bytes one TaskWorkspace holds, the family's scratch included, predicted without allocating.
  static std::size_t predicted_bytes(const Family& f, const EstimatorConfig& cfg, int column_threads = 1) {
    std::size_t doubles = 0;
    EstimatorBuffers().layout(f.dim(), cfg, [&](auto&, Index rows, Index cols) {
      doubles += static_cast<std::size_t>(rows * cols);
    });
    return doubles * sizeof(double) + f.workspace_bytes(family_options(cfg, column_threads));
  }
};

// phi_K of task i into ws.block.col(0); f_i(phi_K) into *loss if requested.
template <class Family>
Status adapt_task(const Family& fam, Index i, const Vec& x, const InnerConfig& inner,
                  TaskWorkspace<Family>& ws, double* loss, Mat* trajectory = nullptr) {
  InnerBlock blk;
  Status st = run_inner_loop(fam, i, x, inner, inner.steps, blk, ws.block, ws.inner, ws.fam, trajectory);
  if (st.ok() && loss) *loss = fam.query_loss(i, ws.block.col(0), ws.fam);
  return st;
}

// The MAML reverse recursion (docs/estimators.md), with the HVP H_k a supplied by `hvp`:
//   a_K = grad f(phi_K),  a_{K+1} = 0,  G = 0
//   for k = K-1 .. 0:
//     G  += lr lam a_{k+1}
//     a_k = (1 + beta - lr lam) a_{k+1} - lr H_k a_{k+1} - beta a_{k+2}
//   return G + a_0 - beta a_1
template <class Family, class Hvp>
Status maml_backward(const Family& fam, Index i, const InnerConfig& c, TaskWorkspace<Family>& ws, Hvp&& hvp,
                     VecOut g) {
  fam.query_grad(i, ws.block.leftCols(1), detail::as_block(ws.a_next), ws.fam);
  ws.a_next2.setZero();
  ws.acc.setZero();
  const double keep = 1.0 + c.momentum - c.lr * c.lam;
  for (int k = c.steps - 1; k >= 0; --k) {
    ws.acc += (c.lr * c.lam) * ws.a_next;
    hvp(ws.traj.col(k), ws.a_next, ws.hv);
    ws.a_cur = keep * ws.a_next - c.lr * ws.hv;
    if (c.momentum != 0.0) ws.a_cur -= c.momentum * ws.a_next2;
    if (!is_finite(ws.a_cur)) return Status::failure(Code::non_finite, Stage::backward, k + 1);
    std::swap(ws.a_next2, ws.a_next);  // a_{k+2} <- a_{k+1}
    std::swap(ws.a_next, ws.a_cur);    // a_{k+1} <- a_k
  }
  g = ws.acc + ws.a_next - c.momentum * ws.a_next2;
  return Status{};
}

template <class Family>
Status fobmaml_task(const Family& fam, Index i, const Vec& x, const EstimatorConfig& cfg,
                    TaskWorkspace<Family>& ws, VecOut g, double* loss) {
  const InnerConfig& c = cfg.inner;
  const double d = cfg.delta;
  const bool sym = cfg.scheme == Scheme::symmetric;
  InnerBlock blk;
  Status st;
  if (cfg.perturbation == Perturbation::objective) {
    // Columns: [psi+, psi-, (phi)] for symmetric, [psi+, phi] for forward.
    blk.spec[0] = {d, 0.0, Stage::perturbed_plus};
    Index phi_col = -1;
    if (sym) {
      blk.spec[1] = {-d, 0.0, Stage::perturbed_minus};
      blk.cols = 2;
      if (loss) phi_col = blk.cols++;
    } else {
      phi_col = blk.cols++;
    }
    if (phi_col >= 0) blk.spec[phi_col] = {0.0, 0.0, Stage::inner_loop};
    st = run_inner_loop(fam, i, x, c, c.steps, blk, ws.block, ws.inner, ws.fam);
    if (!st.ok()) return st;
    if (loss) *loss = fam.query_loss(i, ws.block.col(phi_col), ws.fam);
    if (sym)
      g = (c.lam / (2.0 * d)) * (ws.block.col(1) - ws.block.col(0));
    else
      g = (c.lam / d) * (ws.block.col(phi_col) - ws.block.col(0));
    return Status{};
  }
  // Linear perturbation <v, psi> with v = grad f(phi_K): phi_K first, then psi+-.
  st = adapt_task(fam, i, x, c, ws, loss);
  if (!st.ok()) return st;
  ws.base = ws.block.col(0);
  fam.query_grad(i, ws.block.leftCols(1), detail::as_block(ws.v), ws.fam);
  blk.v = &ws.v;
  blk.spec[0] = {0.0, d, Stage::perturbed_plus};
  if (sym) {
    blk.spec[1] = {0.0, -d, Stage::perturbed_minus};
    blk.cols = 2;
  }
  st = run_inner_loop(fam, i, x, c, c.steps, blk, ws.block, ws.inner, ws.fam);
  if (!st.ok()) return st;
  if (sym)
    g = (c.lam / (2.0 * d)) * (ws.block.col(1) - ws.block.col(0));
  else
    g = (c.lam / d) * (ws.base - ws.block.col(0));
  return Status{};
}

template <class Family>
Status exact_task(const Family& fam, Index i, const Vec& x, const EstimatorConfig& cfg,
                  TaskWorkspace<Family>& ws, VecOut g, double* loss) {
  const InnerConfig& c = cfg.inner;
  if constexpr (Family::has_direct_solve) {
    if (cfg.solver == ExactSolver::automatic)
      return fam.direct_exact(i, x, c.lam, ws.block.col(0), g, loss, ws.fam);
  }
  // The inner problem solved to tol, then (d^2 g(phi*) + lam I) u = lam grad f(phi*) by CG to tol.
  InnerBlock blk;
  blk.spec[0].stage = Stage::inner_solve;
  Status st = run_inner_loop(fam, i, x, c, cfg.max_iter, blk, ws.block, ws.inner, ws.fam, nullptr, cfg.tol);
  if (!st.ok()) return st;
  const auto phi = ws.block.col(0);
  if (loss) *loss = fam.query_loss(i, phi, ws.fam);
  const auto apply = [&](const Vec& p, Vec& out) {
    fam.support_hvp(i, phi, p, out, ws.fam);
    out += c.lam * p;
  };
  // CG only meets the curvature along its Krylov space, which can miss a saddle
  // point of the inner problem: probe the smallest eigenvalue first.
  if (cfg.pd_check_steps > 0) {
    lanczos_start(static_cast<std::uint64_t>(i), ws.lanczos.q);
    const double theta = lanczos_min_ritz(apply, cfg.pd_check_steps, ws.lanczos);
    if (!std::isfinite(theta)) return Status::failure(Code::non_finite, Stage::curvature_probe, -1);
    if (theta <= 0.0) return Status::failure(Code::not_pos_def, Stage::curvature_probe, -1, theta);
  }
  fam.query_grad(i, ws.block.leftCols(1), detail::as_block(ws.v), ws.fam);
  ws.v *= c.lam;
  CGOptions opt;
  opt.max_steps = cfg.max_iter;
  opt.tol = cfg.tol;
  opt.require_converged = true;
  opt.require_pos_def = true;
  return conjugate_gradient(apply, ws.v, g, opt, ws.cg);
}

// The estimate of task i into g (length n); f_i at the adapted point into *loss if
// requested (f_i(phi_K), or f_i(phi*) for Exact). Each estimator checks its own
// iterations; this also checks what it returns, so no NaN or Inf leaves a successful task.
template <class Family>
Status estimate_task_unchecked(const Family& fam, Index i, const Vec& x, const EstimatorConfig& cfg,
                               TaskWorkspace<Family>& ws, VecOut g, double* loss);

template <class Family>
Status estimate_task(const Family& fam, Index i, const Vec& x, const EstimatorConfig& cfg,
                     TaskWorkspace<Family>& ws, VecOut g, double* loss) {
  const Status st = estimate_task_unchecked(fam, i, x, cfg, ws, g, loss);
  if (st.ok() && (!is_finite(g) || (loss && !std::isfinite(*loss))))
    return Status::failure(Code::non_finite, Stage::output, -1);
  return st;
}

// The per-kind dispatch behind estimate_task.
template <class Family>
Status estimate_task_unchecked(const Family& fam, Index i, const Vec& x, const EstimatorConfig& cfg,
                               TaskWorkspace<Family>& ws, VecOut g, double* loss) {
  const InnerConfig& c = cfg.inner;
  Status st;
  switch (cfg.kind) {
    case Kind::fomaml:
      st = adapt_task(fam, i, x, c, ws, loss);
      if (st.ok()) {
        fam.query_grad(i, ws.block.leftCols(1), detail::as_block(ws.v), ws.fam);
        g = ws.v;
      }
      return st;
    case Kind::reptile:
      st = adapt_task(fam, i, x, c, ws, loss);
      if (st.ok()) g = (x - ws.block.col(0)) / (c.lr * c.steps);
      return st;
    case Kind::maml:
      st = adapt_task(fam, i, x, c, ws, loss, &ws.traj);
      if (!st.ok()) return st;
      return maml_backward(
          fam, i, c, ws,
          [&](const auto& phi, const Vec& a, Vec& out) { fam.support_hvp(i, phi, a, out, ws.fam); }, g);
    case Kind::hfmaml: {
      st = adapt_task(fam, i, x, c, ws, loss, &ws.traj);
      if (!st.ok()) return st;
      const double e = cfg.eps;
      return maml_backward(
          fam, i, c, ws,
          [&](const auto& phi, const Vec& a, Vec& out) {
            ws.fd_in.col(0) = phi + e * a;
            ws.fd_in.col(1) = phi - e * a;
            fam.support_grad(i, ws.fd_in, ws.fd_out, ws.fam);
            out = (ws.fd_out.col(0) - ws.fd_out.col(1)) / (2.0 * e);
          },
          g);
    }
    case Kind::imaml: {
      st = adapt_task(fam, i, x, c, ws, loss);
      if (!st.ok()) return st;
      const auto phi = ws.block.col(0);
      fam.query_grad(i, ws.block.leftCols(1), detail::as_block(ws.v), ws.fam);
      CGOptions opt;
      opt.max_steps = cfg.cg_steps;
      return conjugate_gradient(
          [&](const Vec& p, Vec& out) {
            fam.support_hvp(i, phi, p, out, ws.fam);
            out = p + out / c.lam;
          },
          ws.v, g, opt, ws.cg);
    }
    case Kind::fobmaml:
      return fobmaml_task(fam, i, x, cfg, ws, g, loss);
    case Kind::exact:
      return exact_task(fam, i, x, cfg, ws, g, loss);
  }
  return st;
}

}  // namespace fobmaml
