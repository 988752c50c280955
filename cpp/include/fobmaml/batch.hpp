// Running a per-task kernel over a batch of tasks: OpenMP over tasks, one
// workspace per thread, a status per task, and a reduction in a fixed order so
// that results do not depend on the number of threads.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "estimators.hpp"
#include "status.hpp"
#include "types.hpp"

namespace fobmaml {

// Threads used by the batch kernels. 0 (the default) is automatic: up to OpenMP's
// default (OMP_NUM_THREADS or the number of cores), but no more than the work pays
// for (see plan_threads). A positive value is used as given, whatever the work.
// Process-wide, unlike omp_set_num_threads, which only affects the calling thread.
inline std::atomic<int> g_num_threads{0};

// Returns the previous setting.
inline int set_num_threads(int k) { return g_num_threads.exchange(k < 0 ? 0 : k); }

inline int max_threads() {
#ifdef _OPENMP
  const int k = g_num_threads.load();
  return k > 0 ? k : omp_get_max_threads();
#else
  return 1;
#endif
}

// In automatic mode, each thread must get at least this many estimated flops; below
// it, waking a second thread (or waiting for one descheduled on a busy machine)
// costs more than it saves.
constexpr double kMinFlopsPerThread = 2e5;

// How a batch uses its threads: over its tasks, one task per thread; or, when it has fewer
// tasks than threads, one task at a time with the threads over the columns of the
// estimator's block (FO-B-MAML's phi, psi+ and psi-; HF-MAML's pair of gradients). Either
// way every task and every column is computed the same way, so results do not depend on
// the plan. Nested parallelism is not used: it is a process-wide OpenMP setting.
struct ThreadPlan {
  int tasks = 1;
  int columns = 1;
};

// The plan for m tasks of `flops_per_task` estimated flops each, whose largest block has
// `block_cols` columns.
inline ThreadPlan plan_threads(Index m, double flops_per_task, int block_cols = 1) {
  Index t = max_threads();
  if (g_num_threads.load() == 0) {
    const double by_work = std::floor(static_cast<double>(m) * flops_per_task / kMinFlopsPerThread);
    t = std::min<Index>(t, static_cast<Index>(std::min(by_work, 1e6)));
  }
  t = std::max<Index>(1, t);
  ThreadPlan plan;
  plan.tasks = static_cast<int>(std::min<Index>(t, m));
  if (plan.tasks == 1) plan.columns = static_cast<int>(std::min<Index>(t, std::max(1, block_cols)));
  return plan;
}

// A rough cost model of one task: gradient evaluations times the family's cost of one.
template <class Family>
double task_flops(const Family& fam, const EstimatorConfig& cfg) {
  double evals = cfg.inner.steps + 1.0;
  switch (cfg.kind) {
    case Kind::maml:
    case Kind::fobmaml:
      evals *= 2.0;
      break;
    case Kind::hfmaml:
      evals *= 3.0;
      break;
    case Kind::imaml:
      evals += cfg.cg_steps;
      break;
    case Kind::exact:
      evals = 100.0;  // solves to tolerance: a guess of their length in gradient evaluations
      break;
    default:
      break;
  }
  return evals * fam.gradient_flops();
}

inline int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// Calls body(i, workspace) for i = 0..m-1 on `threads` threads. Workspaces are built here,
// before the parallel region (so an allocation failure surfaces as an exception
// in the calling thread), one per thread actually used. One thread runs outside any
// parallel region, so that the body may open its own (column threads).
template <class Workspace, class Make, class Body>
void for_each_task(Index m, int threads, Make&& make, Body&& body) {
  std::vector<Workspace> ws;
  ws.reserve(threads);
  for (int t = 0; t < threads; ++t) ws.push_back(make());
  if (threads <= 1) {
    for (Index i = 0; i < m; ++i) body(i, ws[0]);
    return;
  }
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (Index i = 0; i < m; ++i) body(i, ws[thread_id()]);
}

// out = mean of the rows of the row-major G (m x n) whose task succeeded, summed in
// task order. The rows (and losses, if given) of failed tasks are set to NaN, so
// that nothing left over in memory can leak into the outputs. With no successful
// task, out is NaN too; callers report the statuses.
inline void finish_batch(double* G, double* losses, const Status* status, Index m, Index n, double* out) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Eigen::Map<Vec> acc(out, n);
  acc.setZero();
  Index good = 0;
  for (Index i = 0; i < m; ++i) {
    Eigen::Map<Vec> row(G + i * n, n);
    if (status[i].ok()) {
      acc += row;
      ++good;
    } else {
      row.setConstant(nan);
      if (losses) losses[i] = nan;
    }
  }
  if (good == 0) {
    acc.setConstant(nan);
    return;
  }
  acc /= static_cast<double>(good);
  if (!is_finite(acc)) {  // the sum of finite rows overflowed: average the scaled rows instead
    acc.setZero();
    for (Index i = 0; i < m; ++i)
      if (status[i].ok()) acc += Eigen::Map<const Vec>(G + i * n, n) / static_cast<double>(good);
  }
}

// The thread plan of one estimator call on these tasks.
template <class Family>
ThreadPlan estimator_plan(const Family& fam, const EstimatorConfig& cfg) {
  return plan_threads(fam.num_tasks(), task_flops(fam, cfg), block_columns(cfg));
}

// Bytes of workspace one estimator call allocates (all threads), before allocating any.
template <class Family>
std::size_t batch_workspace_bytes(const Family& fam, const EstimatorConfig& cfg) {
  const ThreadPlan plan = estimator_plan(fam, cfg);
  return static_cast<std::size_t>(plan.tasks) *
         TaskWorkspace<Family>::predicted_bytes(fam, cfg, plan.columns);
}

// Per-task estimates into the rows of G (m x n, row-major), losses into `losses`
// (may be null), one status per task into `status`.
template <class Family>
void estimate_batch(const Family& fam, VecIn x, const EstimatorConfig& cfg, double* G, double* losses,
                    Status* status) {
  const Vec x0 = x;  // an aligned private copy: results must not depend on the caller's alignment
  const Index n = fam.dim();
  const Index m = fam.num_tasks();
  const ThreadPlan plan = estimator_plan(fam, cfg);
  for_each_task<TaskWorkspace<Family>>(
      m, plan.tasks, [&] { return TaskWorkspace<Family>(fam, cfg, plan.columns); },
      [&](Index i, TaskWorkspace<Family>& ws) {
        // Computed in the (aligned) workspace, then copied: Eigen peels unaligned heads of
        // a destination into scalar code, which rounds differently from its FMA packets, so
        // writing straight into the caller's row would tie the bits to the row's address.
        status[i] = estimate_task(fam, i, x0, cfg, ws, ws.out, losses ? losses + i : nullptr);
        Eigen::Map<Vec>(G + i * n, n) = ws.out;
      });
}

// phi_K of every task into the rows of Phi, f_i(phi_K) into losses and the query
// accuracy at phi_K into accuracy (each may be null). inner.steps = 0 evaluates x itself.
template <class Family>
void adapt_batch(const Family& fam, VecIn x, const InnerConfig& inner, double* Phi, double* losses,
                 double* accuracy, Status* status) {
  const Vec x0 = x;
  const Index n = fam.dim();
  EstimatorConfig cfg;
  cfg.kind = Kind::fomaml;
  cfg.inner = inner;
  const Index m = fam.num_tasks();
  for_each_task<TaskWorkspace<Family>>(
      m, plan_threads(m, task_flops(fam, cfg)).tasks, [&] { return TaskWorkspace<Family>(fam, cfg); },
      [&](Index i, TaskWorkspace<Family>& ws) {
        status[i] = adapt_task(fam, i, x0, inner, ws, losses ? losses + i : nullptr);
        if (status[i].ok() && losses && !std::isfinite(losses[i]))
          status[i] = Status::failure(Code::non_finite, Stage::query, -1);
        if (!status[i].ok()) return;
        if (Phi) Eigen::Map<Vec>(Phi + i * n, n) = ws.block.col(0);
        if (accuracy) accuracy[i] = fam.query_accuracy(i, ws.block.col(0), ws.fam);
      });
}

// The family's own functions, per task: at the row phi_i of Phi (m x n), the
// support (query if `query`) loss into losses[i], its gradient into the row of G and,
// if V is non-null, its Hessian times the row v_i of V into the row of HV.
template <class Family>
void family_batch(const Family& fam, bool query, const double* Phi, const double* V, double* losses,
                  double* G, double* HV) {
  const Index m = fam.num_tasks(), n = fam.dim();
  // Inputs and outputs go through aligned scratch (see estimate_batch).
  struct Scratch {
    typename Family::Workspace fam;
    Mat phi, g;
    Vec v, hv;
  };
  FamilyOptions opt;
  opt.hvp = V != nullptr;
  for_each_task<Scratch>(
      m, plan_threads(m, 2.0 * fam.gradient_flops()).tasks,
      [&] { return Scratch{fam.make_workspace(opt), Mat(n, 1), Mat(n, 1), Vec(V ? n : 0), Vec(V ? n : 0)}; },
      [&](Index i, Scratch& s) {
        s.phi.col(0) = Eigen::Map<const Vec>(Phi + i * n, n);
        if (query) {
          losses[i] = fam.query_loss(i, s.phi.col(0), s.fam);
          fam.query_grad(i, s.phi, s.g, s.fam);
        } else {
          losses[i] = fam.support_loss(i, s.phi.col(0), s.fam);
          fam.support_grad(i, s.phi, s.g, s.fam);
        }
        Eigen::Map<Vec>(G + i * n, n) = s.g.col(0);
        if (!V) return;
        s.v = Eigen::Map<const Vec>(V + i * n, n);
        if (query)
          fam.query_hvp(i, s.phi.col(0), s.v, s.hv, s.fam);
        else
          fam.support_hvp(i, s.phi.col(0), s.v, s.hv, s.fam);
        Eigen::Map<Vec>(HV + i * n, n) = s.hv;
      });
}

}  // namespace fobmaml
