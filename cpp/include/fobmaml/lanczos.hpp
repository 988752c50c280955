// A Lanczos probe of the smallest eigenvalue of a symmetric operator.
#pragma once

#include <Eigen/Eigenvalues>
#include <cmath>
#include <cstdint>

#include "types.hpp"

namespace fobmaml {

struct LanczosScratch {
  Vec q_prev, q, w, alpha, beta;
  void resize(Index n, int steps) {
    q_prev.resize(n);
    q.resize(n);
    w.resize(n);
    alpha.resize(steps);
    beta.resize(steps);
  }
};

// A deterministic start vector for task `seed` (splitmix64 -> uniform in [-1, 1)), so
// that results do not depend on the thread that runs the task.
inline void lanczos_start(std::uint64_t seed, VecOut v) {
  std::uint64_t z = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
  for (Index i = 0; i < v.size(); ++i) {
    z += 0x9E3779B97F4A7C15ull;
    std::uint64_t r = z;
    r = (r ^ (r >> 30)) * 0xBF58476D1CE4E5B9ull;
    r = (r ^ (r >> 27)) * 0x94D049BB133111EBull;
    r ^= r >> 31;
    v[i] = static_cast<double>(r >> 11) * (2.0 / 9007199254740992.0) - 1.0;
  }
}

// The smallest Ritz value after at most `steps` Lanczos iterations of the symmetric
// operator `apply(v, out)` (out = M v), started from s.q. Ritz values lie inside the
// spectrum, so a negative result proves that M is not positive definite; a positive
// one is an upper bound on the smallest eigenvalue, not a proof of definiteness.
template <class Apply>
double lanczos_min_ritz(Apply&& apply, int steps, LanczosScratch& s) {
  s.q /= s.q.norm();
  s.q_prev.setZero();
  double beta_prev = 0.0;
  int k = 0;
  for (; k < steps; ++k) {
    apply(s.q, s.w);
    if (k > 0) s.w -= beta_prev * s.q_prev;
    const double a = s.q.dot(s.w);
    s.w -= a * s.q;
    const double b = s.w.norm();
    s.alpha[k] = a;
    s.beta[k] = b;
    if (!std::isfinite(b) || b <= 1e-12 * (std::abs(a) + beta_prev)) {
      ++k;
      break;  // an invariant subspace: the Ritz values are eigenvalues
    }
    s.q_prev.swap(s.q);
    s.q = s.w / b;
    beta_prev = b;
  }
  if (k == 1) return s.alpha[0];
  Eigen::SelfAdjointEigenSolver<Mat> eig;
  eig.computeFromTridiagonal(s.alpha.head(k), s.beta.head(k - 1), Eigen::EigenvaluesOnly);
  return eig.eigenvalues().minCoeff();
}

}  // namespace fobmaml
