// Common types and configuration records shared by every kernel.
#pragma once

#include <Eigen/Core>
#include <cstdint>

namespace fobmaml {

using Index = Eigen::Index;
using Vec = Eigen::VectorXd;
using Mat = Eigen::MatrixXd;  // column-major
using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// A block of parameter vectors, one per column (n x p, column-major, contiguous columns).
using BlockIn = Eigen::Ref<const Mat>;
using BlockOut = Eigen::Ref<Mat>;
using VecIn = Eigen::Ref<const Vec>;
using VecOut = Eigen::Ref<Vec>;

// The inner loop: K steps of heavy-ball GD on h(phi; x) = g(phi) + lam/2 ||phi - x||^2.
struct InnerConfig {
  int steps = 1;          // K >= 1 (adapt_batch also takes 0: evaluate at x itself)
  double lr = 0.1;        // alpha > 0
  double lam = 0.0;       // lambda >= 0
  double momentum = 0.0;  // beta in [0, 1)
};

enum class Kind : int { maml = 0, fomaml, reptile, imaml, hfmaml, fobmaml, exact };
enum class Scheme : int { forward = 0, symmetric };
enum class Perturbation : int { objective = 0, linear };
enum class ExactSolver : int { automatic = 0, iterative };

struct EstimatorConfig {
  Kind kind = Kind::fomaml;
  InnerConfig inner;
  // FOBMAML
  double delta = 1e-3;
  Scheme scheme = Scheme::forward;
  Perturbation perturbation = Perturbation::objective;
  // IMAML
  int cg_steps = 5;
  // HFMAML
  double eps = 1e-5;
  // Exact
  double tol = 1e-10;
  std::int64_t max_iter = 100000;
  ExactSolver solver = ExactSolver::automatic;
  int pd_check_steps = 30;  // Lanczos steps probing d^2 g(phi*) + lam I before CG; 0 = off
};

// What a task family's per-thread workspace must hold (make_workspace / workspace_bytes).
struct FamilyOptions {
  bool hvp = false;           // Hessian-vector products will be taken
  bool exact_direct = false;  // the closed-form exact solve (families with has_direct_solve)
  int column_threads = 1;     // threads over the columns of a block (FO-B-MAML's psi+ and psi-)
};

}  // namespace fobmaml
