// The quadratic task family:
//   support loss  g_i(phi) = 1/2 phi^T A_i phi - b_i^T phi
//   query loss    f_i(phi) = 1/2 phi^T B_i phi - c_i^T phi   (B_i, c_i default to A_i, b_i)
// with A_i, B_i symmetric. The family reads caller-owned row-major (m, n, n) and
// (m, n) arrays in place; it never copies them.
#pragma once

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <limits>

#include "../dense.hpp"
#include "../status.hpp"
#include "../types.hpp"

namespace fobmaml {

class QuadraticTasks {
 public:
  using MatMap = Eigen::Map<const RowMat>;
  using VecMap = Eigen::Map<const Vec>;

  // Scratch space owned by one thread; only the closed-form exact solve needs any.
  struct Workspace {
    Mat M;
    // Built from an empty matrix: a default-constructed LLT leaves its info() member
    // uninitialized, and copying the workspace would read it (UBSan reports that).
    Eigen::LLT<Mat> llt{Mat(0, 0)};
    Vec rhs;
  };

  // B and c may be null: the query loss is then the support loss.
  QuadraticTasks(const double* A, const double* b, const double* B, const double* c, Index m, Index n)
      : A_(A), b_(b), B_(B ? B : A), c_(c ? c : b), m_(m), n_(n), same_query_(B == nullptr) {}

  Index num_tasks() const { return m_; }
  Index dim() const { return n_; }
  bool query_is_support() const { return same_query_; }
  // Only Exact's closed form uses the workspace (A + lam I, its factor and a right-hand
  // side); they are sized by the first solve, and workspace_bytes counts them.
  Workspace make_workspace(const FamilyOptions&) const { return Workspace{}; }
  std::size_t workspace_bytes(const FamilyOptions& opt) const {
    return opt.exact_direct ? static_cast<std::size_t>(2 * n_ * n_ + n_) * sizeof(double) : 0;
  }
  // Estimated flops of one gradient (one column): a matrix-vector product.
  double gradient_flops() const { return 2.0 * static_cast<double>(n_) * static_cast<double>(n_); }

  MatMap A(Index i) const { return MatMap(A_ + i * n_ * n_, n_, n_); }
  VecMap b(Index i) const { return VecMap(b_ + i * n_, n_); }
  MatMap B(Index i) const { return MatMap(B_ + i * n_ * n_, n_, n_); }
  VecMap c(Index i) const { return VecMap(c_ + i * n_, n_); }

  double support_loss(Index i, VecIn phi, Workspace&) const { return loss(A(i), b(i), phi); }
  double query_loss(Index i, VecIn phi, Workspace&) const { return loss(B(i), c(i), phi); }

  // G[:, j] = A_i Phi[:, j] - b_i for every column j.
  void support_grad(Index i, BlockIn Phi, BlockOut G, Workspace&) const { affine_block(A(i), b(i), Phi, G); }
  void query_grad(Index i, BlockIn Phi, BlockOut G, Workspace&) const { affine_block(B(i), c(i), Phi, G); }
  // The Hessian of g_i is A_i everywhere.
  void support_hvp(Index i, VecIn /*phi*/, VecIn v, VecOut out, Workspace&) const {
    out.noalias() = A(i) * v;
  }
  void query_hvp(Index i, VecIn /*phi*/, VecIn v, VecOut out, Workspace&) const { out.noalias() = B(i) * v; }
  // Quadratic tasks have no classes.
  double query_accuracy(Index, VecIn, Workspace&) const { return std::numeric_limits<double>::quiet_NaN(); }

  // Closed form of the exact meta-gradient of task i (see ESTIMATORS.md):
  //   phi* = (A + lam I)^{-1} (b + lam x),   grad = lam (A + lam I)^{-1} (B phi* - c).
  // Writes phi*, the gradient and f_i(phi*). Fails if A_i + lam I is not positive definite.
  // The support and query matrices differ, so a combined gradient would save nothing here.
  static constexpr bool has_combined_grad = false;

  static constexpr bool has_direct_solve = true;
  Status direct_exact(Index i, VecIn x, double lam, VecOut phi_star, VecOut grad, double* loss_out,
                      Workspace& ws) const {
    ws.M = A(i);
    ws.M.diagonal().array() += lam;
    ws.llt.compute(ws.M);
    if (ws.llt.info() != Eigen::Success) return Status::failure(Code::not_pos_def, Stage::direct_solve, -1);
    ws.rhs = b(i) + lam * x;
    phi_star = ws.llt.solve(ws.rhs);
    ws.rhs.noalias() = B(i) * phi_star;
    ws.rhs -= c(i);
    grad = ws.llt.solve(ws.rhs);
    grad *= lam;
    if (loss_out) *loss_out = loss(B(i), c(i), phi_star);
    if (!phi_star.allFinite() || !grad.allFinite())
      return Status::failure(Code::non_finite, Stage::direct_solve, -1);
    return Status{};
  }

 private:
  static double loss(const MatMap& A, const VecMap& b, VecIn phi) {
    // 1/2 phi^T A phi - b^T phi, row by row so that no temporary is allocated.
    double quad = 0.0;
    for (Index r = 0; r < A.rows(); ++r) quad += phi[r] * A.row(r).dot(phi);
    return 0.5 * quad - b.dot(phi);
  }

  // G[:, j] = A Phi[:, j] - b for each column. Several columns (phi, psi+, psi-) share
  // one pass over A (multi_matvec); a single column uses Eigen's GEMV, which is faster
  // for one vector.
  static void affine_block(const MatMap& A, const VecMap& b, BlockIn Phi, BlockOut G) {
    if (Phi.cols() == 1)
      G.col(0).noalias() = A * Phi.col(0);
    else
      multi_matvec(A, Phi, G);
    G.colwise() -= b;
  }

  const double* A_;
  const double* b_;
  const double* B_;
  const double* c_;
  Index m_, n_;
  bool same_query_;
};

}  // namespace fobmaml
