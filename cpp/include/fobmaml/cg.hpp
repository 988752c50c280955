// Matrix-free conjugate gradient for M u = b, started from u = 0.
#pragma once

#include <cmath>
#include <cstdint>

#include "status.hpp"
#include "types.hpp"

namespace fobmaml {

struct CGScratch {
  Vec r, p, Mp;
  void resize(Index n) {
    r.resize(n);
    p.resize(n);
    Mp.resize(n);
  }
};

struct CGOptions {
  std::int64_t max_steps = 0;      // iteration cap
  double tol = 0.0;                // stop when ||r|| <= tol ||b||; 0 runs exactly max_steps
  bool require_converged = false;  // fail with not_converged if the cap is hit first
  bool require_pos_def = false;    // fail with not_pos_def on non-positive curvature
};

// `apply(v, out)` writes M v into out. Without require_pos_def, a step with zero
// curvature ends the iteration early (the CG recurrence is undefined there); a step
// with negative curvature is taken as the plain recurrence prescribes.
template <class Apply>
Status conjugate_gradient(Apply&& apply, VecIn b, VecOut u, const CGOptions& opt, CGScratch& s) {
  u.setZero();
  s.r = b;
  s.p = b;
  double rs = s.r.squaredNorm();
  const double stop = opt.tol * opt.tol * rs;
  if (!std::isfinite(rs)) return Status::failure(Code::non_finite, Stage::cg, 0);
  for (std::int64_t j = 0; j < opt.max_steps; ++j) {
    if (rs == 0.0 || (opt.tol > 0.0 && rs <= stop)) return Status{};
    apply(s.p, s.Mp);
    const double curv = s.p.dot(s.Mp);
    if (!std::isfinite(curv)) return Status::failure(Code::non_finite, Stage::cg, j + 1);
    if (opt.require_pos_def && curv <= 0.0) return Status::failure(Code::not_pos_def, Stage::cg, j + 1, curv);
    if (curv == 0.0) return Status{};
    const double a = rs / curv;
    u += a * s.p;
    s.r -= a * s.Mp;
    const double rs_new = s.r.squaredNorm();
    s.p = s.r + (rs_new / rs) * s.p;
    rs = rs_new;
  }
  if (opt.require_converged && !(rs == 0.0 || rs <= stop))
    return Status::failure(Code::not_converged, Stage::cg, opt.max_steps, std::sqrt(rs));
  return Status{};
}

}  // namespace fobmaml
