// The MLP task family (ESTIMATORS.md, "Task families"): a fully connected network
// with layer sizes [d_0, d_1, ..., d_L], activation relu or tanh on the hidden
// layers and the identity on the output, trained with
//   mse:  mean over all output elements of (yhat - y)^2
//   xent: mean over samples of -log softmax(yhat)[label].
// Linear regression and softmax/logistic regression are the case L = 1.
//
// Parameters are one flat vector: for each layer, W (d_l x d_{l-1}) row-major, then
// b (d_l): the order of torch.nn.utils.parameters_to_vector for nn.Sequential of
// nn.Linear layers.
//
// Samples are stored as columns: the caller's row-major (k, d) arrays are read in
// place as column-major (d, k) matrices. Gradients are exact (backprop); HVPs are
// exact (Pearlmutter's R-operator, forward-over-reverse), with relu'' taken as 0.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "../status.hpp"
#include "../types.hpp"

namespace fobmaml {

// tanh, vectorized: Eigen's tanh for double calls std::tanh one element at a time.
// |x| < 0.625: Cephes' rational approximation x + x z P(z)/Q(z), z = x^2;
// otherwise sign(x) (1 - 2 / (exp(2|x|) + 1)). Within 2 ulp of std::tanh (checked on a
// dense grid over [-40, 40] and near 0); out may not alias x.
template <class In, class Out>
void vector_tanh(const In& x, Out&& out) {
  out = (2.0 * x.abs()).exp();
  const auto z = x.square();
  const auto P = (-9.64399179425052238628E-1 * z - 9.92877231001918586564E1) * z - 1.61468768441708447952E3;
  const auto Q =
      ((z + 1.12811678491632931402E2) * z + 2.23548839060100448583E3) * z + 4.84406305325125486048E3;
  out = (x.abs() < 0.625).select(x + x * z * P / Q, x.sign() * (1.0 - 2.0 / (out + 1.0)));
}

enum class Activation : int { relu = 0, tanh };
enum class LossKind : int { mse = 0, xent };

class MLPTasks {
 public:
  using ConstMatMap = Eigen::Map<const Mat>;
  using WMap = Eigen::Map<const RowMat>;
  using WOut = Eigen::Map<RowMat>;

  // One data set (support or query) of m tasks with k samples each.
  struct Data {
    const double* X = nullptr;        // (m, k, d_0) row-major
    const double* Y = nullptr;        // (m, k, d_L) row-major targets (mse)
    const std::int64_t* L = nullptr;  // (m, k) labels in [0, d_L) (xent)
    Index k = 0;
  };

  // Per-thread scratch, sized once for the larger of the two data sets. Layer l
  // (0-based, L layers) has Z[l] = W_l A_{l-1} + b_l, A[l] = act(Z[l]) (hidden
  // layers only), D[l] = dLoss/dZ[l]; R* are their directional derivatives.
  struct Workspace {
    std::vector<Mat> Z, A, D, RZ, RA, RD;
    Mat T;       // (max hidden width) x k scratch: W^T D before the activation derivative
    Mat X_both;  // d_0 x (k_s + k_q): the support inputs, then the query inputs, of one task
    Index X_both_task = -1;
  };

  MLPTasks(Data support, Data query, bool same_query, Index m, std::vector<Index> layers, Activation act,
           LossKind loss)
      : s_(support),
        q_(query),
        same_query_(same_query),
        m_(m),
        d_(std::move(layers)),
        act_(act),
        loss_(loss) {
    const Index L = num_layers();
    woff_.resize(L);
    boff_.resize(L);
    Index off = 0;
    for (Index l = 0; l < L; ++l) {
      woff_[l] = off;
      off += d_[l + 1] * d_[l];
      boff_[l] = off;
      off += d_[l + 1];
    }
    n_ = off;
  }

  Index num_tasks() const { return m_; }
  Index dim() const { return n_; }
  Index num_layers() const { return static_cast<Index>(d_.size()) - 1; }
  bool query_is_support() const { return same_query_; }

  // One forward + backward pass over the larger data set: ~6 k sum_l d_l d_{l-1}.
  double gradient_flops() const {
    double macs = 0.0;
    for (Index l = 0; l < num_layers(); ++l) macs += static_cast<double>(d_[l + 1] * d_[l]);
    return 6.0 * macs * static_cast<double>(std::max(s_.k, q_.k));
  }

  Workspace make_workspace() const {
    // Room for the support and query samples side by side (the combined gradient).
    const Index k = same_query_ ? s_.k : s_.k + q_.k, L = num_layers();
    Workspace ws;
    for (auto* v : {&ws.Z, &ws.A, &ws.D, &ws.RZ, &ws.RA, &ws.RD}) v->resize(L);
    Index widest = 1;
    for (Index l = 0; l < L; ++l) {
      for (auto* v : {&ws.Z, &ws.D, &ws.RZ, &ws.RD}) (*v)[l].resize(d_[l + 1], k);
      if (l + 1 < L) {
        ws.A[l].resize(d_[l + 1], k);
        ws.RA[l].resize(d_[l + 1], k);
        widest = std::max(widest, d_[l + 1]);
      }
    }
    ws.T.resize(std::max(widest, d_[L]), k);  // also holds one softmax column in hvp
    if (!same_query_) ws.X_both.resize(d_[0], k);
    return ws;
  }

  // Bytes of one Workspace (activations and their derivatives for every layer).
  std::size_t workspace_bytes() const {
    const Index k = same_query_ ? s_.k : s_.k + q_.k;
    Index widest = d_[num_layers()], entries = same_query_ ? 0 : d_[0] * k;
    for (Index l = 0; l < num_layers(); ++l) {
      entries += 4 * d_[l + 1] * k;
      if (l + 1 < num_layers()) {
        entries += 2 * d_[l + 1] * k;
        widest = std::max(widest, d_[l + 1]);
      }
    }
    return static_cast<std::size_t>(entries + widest * k) * sizeof(double);
  }

  double support_loss(Index i, VecIn phi, Workspace& ws) const {
    return loss_and_grad(s_, i, phi, nullptr, ws);
  }
  double query_loss(Index i, VecIn phi, Workspace& ws) const {
    return loss_and_grad(q_, i, phi, nullptr, ws);
  }

  void support_grad(Index i, BlockIn Phi, BlockOut G, Workspace& ws) const {
    for (Index j = 0; j < Phi.cols(); ++j) loss_and_grad(s_, i, Phi.col(j), G.col(j).data(), ws);
  }
  void query_grad(Index i, BlockIn Phi, BlockOut G, Workspace& ws) const {
    for (Index j = 0; j < Phi.cols(); ++j) loss_and_grad(q_, i, Phi.col(j), G.col(j).data(), ws);
  }
  void support_hvp(Index i, VecIn phi, VecIn v, VecOut out, Workspace& ws) const {
    hvp(s_, i, phi, v, out, ws);
  }
  void query_hvp(Index i, VecIn phi, VecIn v, VecOut out, Workspace& ws) const {
    hvp(q_, i, phi, v, out, ws);
  }

  // G[:, j] = grad g(Phi[:, j]) + s_j grad f(Phi[:, j]): the gradient of the support loss
  // plus s_j times the query loss, in one forward and one backward pass over the support
  // and query samples side by side (the objective-perturbed inner loop of FO-B-MAML).
  static constexpr bool has_combined_grad = true;
  void combined_grad(Index i, BlockIn Phi, const double* s, BlockOut G, Workspace& ws) const {
    if (same_query_) {
      support_grad(i, Phi, G, ws);
      for (Index j = 0; j < Phi.cols(); ++j) G.col(j) *= 1.0 + s[j];
      return;
    }
    if (ws.X_both_task != i) {
      ws.X_both.leftCols(s_.k) = inputs(s_, i);
      ws.X_both.middleCols(s_.k, q_.k) = inputs(q_, i);
      ws.X_both_task = i;
    }
    const Index k = s_.k + q_.k;
    for (Index j = 0; j < Phi.cols(); ++j) {
      forward(ws.X_both, k, Phi.col(j), ws);
      output_grad(s_, i, 0, 1.0, ws);
      output_grad(q_, i, s_.k, s[j], ws);
      backward(ws.X_both, k, Phi.col(j), G.col(j).data(), ws);
    }
  }

  // Fraction of query samples whose largest output is the label (xent); NaN for mse.
  double query_accuracy(Index i, VecIn phi, Workspace& ws) const {
    if (loss_ != LossKind::xent) return std::numeric_limits<double>::quiet_NaN();
    forward(inputs(q_, i), q_.k, phi, ws);
    const auto out = ws.Z[num_layers() - 1].leftCols(q_.k);
    const std::int64_t* lab = q_.L + i * q_.k;
    Index hits = 0;
    for (Index s = 0; s < q_.k; ++s) {
      Index arg;
      out.col(s).maxCoeff(&arg);
      hits += (arg == lab[s]);
    }
    return static_cast<double>(hits) / static_cast<double>(q_.k);
  }

  static constexpr bool has_direct_solve = false;

 private:
  ConstMatMap inputs(const Data& D, Index i) const { return ConstMatMap(D.X + i * D.k * d_[0], d_[0], D.k); }
  WMap W(VecIn phi, Index l) const { return WMap(phi.data() + woff_[l], d_[l + 1], d_[l]); }
  Eigen::Map<const Vec> b(VecIn phi, Index l) const {
    return Eigen::Map<const Vec>(phi.data() + boff_[l], d_[l + 1]);
  }

  void activate(const Mat& Z, Mat& A, Index k) const {
    if (act_ == Activation::relu)
      A.leftCols(k) = Z.leftCols(k).cwiseMax(0.0);
    else
      vector_tanh(Z.leftCols(k).array(), A.leftCols(k).array());
  }
  // out (.)= act'(Z) elementwise, given Z and A = act(Z).
  template <class Out>
  void times_act_prime(const Mat& Z, const Mat& A, Index k, Out&& out) const {
    if (act_ == Activation::relu)
      out.array() *= (Z.leftCols(k).array() > 0.0).template cast<double>();
    else
      out.array() *= 1.0 - A.leftCols(k).array().square();
  }

  // Z and A of every layer for the k samples (columns) of X.
  template <class XMat>
  void forward(const XMat& X, Index k, VecIn phi, Workspace& ws) const {
    const Index L = num_layers();
    for (Index l = 0; l < L; ++l) {
      auto Z = ws.Z[l].leftCols(k);
      if (l == 0)
        Z.noalias() = W(phi, 0) * X.leftCols(k);
      else
        Z.noalias() = W(phi, l) * ws.A[l - 1].leftCols(k);
      Z.colwise() += b(phi, l);
      if (l + 1 < L) activate(ws.Z[l], ws.A[l], k);
    }
  }

  // For data set D of task i, whose k samples sit in columns c0..c0+k-1 of the forward
  // pass in ws: weight * dLoss/dZ_out into those columns of D[L-1]; returns the loss.
  double output_grad(const Data& D, Index i, Index c0, double weight, Workspace& ws) const {
    const Index L = num_layers(), k = D.k, dout = d_[L];
    const auto Z = ws.Z[L - 1].middleCols(c0, k);
    auto G = ws.D[L - 1].middleCols(c0, k);
    if (loss_ == LossKind::mse) {
      const ConstMatMap Y(D.Y + i * k * dout, dout, k);
      G = Z - Y;
      const double scale = 1.0 / static_cast<double>(k * dout);
      const double value = G.squaredNorm() * scale;
      G *= 2.0 * scale * weight;
      return value;
    }
    const std::int64_t* lab = D.L + i * k;
    double value = 0.0;
    for (Index s = 0; s < k; ++s) {
      const double mx = Z.col(s).maxCoeff();
      G.col(s) = (Z.col(s).array() - mx).exp().matrix();
      const double sum = G.col(s).sum();
      value += mx + std::log(sum) - Z(lab[s], s);
      G.col(s) /= sum;  // softmax probabilities
      G(lab[s], s) -= 1.0;
    }
    G *= weight / static_cast<double>(k);
    return value / static_cast<double>(k);
  }

  // Backpropagation of D[L-1] (for the k columns of the forward pass on X) into grad.
  template <class XMat>
  void backward(const XMat& X, Index k, VecIn phi, double* grad, Workspace& ws) const {
    const Index L = num_layers();
    for (Index l = L - 1; l >= 0; --l) {
      const auto Dl = ws.D[l].leftCols(k);
      WOut gW(grad + woff_[l], d_[l + 1], d_[l]);
      if (l == 0)
        gW.noalias() = Dl * X.leftCols(k).transpose();
      else
        gW.noalias() = Dl * ws.A[l - 1].leftCols(k).transpose();
      Eigen::Map<Vec>(grad + boff_[l], d_[l + 1]) = Dl.rowwise().sum();
      if (l > 0) {
        auto Dprev = ws.D[l - 1].leftCols(k);
        Dprev.noalias() = W(phi, l).transpose() * Dl;
        times_act_prime(ws.Z[l - 1], ws.A[l - 1], k, Dprev);
      }
    }
  }

  // Loss of task i at phi on data set D; if grad is non-null, its gradient (n entries) too.
  double loss_and_grad(const Data& D, Index i, VecIn phi, double* grad, Workspace& ws) const {
    const auto X = inputs(D, i);
    forward(X, D.k, phi, ws);
    const double value = output_grad(D, i, 0, 1.0, ws);
    if (grad) backward(X, D.k, phi, grad, ws);
    return value;
  }

  // out = (d^2 loss / d phi^2) v, by forward-over-reverse.
  void hvp(const Data& D, Index i, VecIn phi, VecIn v, VecOut out, Workspace& ws) const {
    const Index L = num_layers(), k = D.k, dout = d_[L];
    const auto X = inputs(D, i);
    forward(X, k, phi, ws);
    // R-forward: RZ_l = V_l A_{l-1} + W_l RA_{l-1} + c_l,  RA_l = act'(Z_l) RZ_l.
    for (Index l = 0; l < L; ++l) {
      auto RZ = ws.RZ[l].leftCols(k);
      if (l == 0) {
        RZ.noalias() = W(v, 0) * X;
      } else {
        RZ.noalias() = W(v, l) * ws.A[l - 1].leftCols(k);
        RZ.noalias() += W(phi, l) * ws.RA[l - 1].leftCols(k);
      }
      RZ.colwise() += b(v, l);
      if (l + 1 < L) {
        ws.RA[l].leftCols(k) = RZ;
        times_act_prime(ws.Z[l], ws.A[l], k, ws.RA[l].leftCols(k));
      }
    }
    // Output: D = dLoss/dZ, RD = (d^2 Loss/dZ^2) RZ.
    output_grad(D, i, 0, 1.0, ws);
    auto RDout = ws.RD[L - 1].leftCols(k);
    const auto RZout = ws.RZ[L - 1].leftCols(k);
    if (loss_ == LossKind::mse) {
      RDout = (2.0 / static_cast<double>(k * dout)) * RZout;
    } else {
      // Softmax Hessian per sample: diag(p) - p p^T, with p recovered from D (= (p - e_y)/k).
      const std::int64_t* lab = D.L + i * k;
      for (Index s = 0; s < k; ++s) {
        ws.T.col(0).head(dout) = static_cast<double>(k) * ws.D[L - 1].col(s);
        ws.T(lab[s], 0) += 1.0;  // p
        const auto p = ws.T.col(0).head(dout);
        RDout.col(s) = p.cwiseProduct(RZout.col(s)) - p * p.dot(RZout.col(s));
      }
      RDout /= static_cast<double>(k);
    }
    // R-backward.
    for (Index l = L - 1; l >= 0; --l) {
      const auto Dl = ws.D[l].leftCols(k);
      const auto RDl = ws.RD[l].leftCols(k);
      WOut hW(out.data() + woff_[l], d_[l + 1], d_[l]);
      if (l == 0) {
        hW.noalias() = RDl * X.transpose();
      } else {
        hW.noalias() = RDl * ws.A[l - 1].leftCols(k).transpose();
        hW.noalias() += Dl * ws.RA[l - 1].leftCols(k).transpose();
      }
      Eigen::Map<Vec>(out.data() + boff_[l], d_[l + 1]) = RDl.rowwise().sum();
      if (l == 0) break;
      const Index h = d_[l];
      auto T = ws.T.topLeftCorner(h, k);
      auto Dprev = ws.D[l - 1].leftCols(k);
      auto RDprev = ws.RD[l - 1].leftCols(k);
      T.noalias() = W(phi, l).transpose() * Dl;  // W^T D, before act'
      RDprev.noalias() = W(v, l).transpose() * Dl;
      RDprev.noalias() += W(phi, l).transpose() * RDl;
      times_act_prime(ws.Z[l - 1], ws.A[l - 1], k, RDprev);
      if (act_ == Activation::tanh) {
        // + (W^T D) act''(Z) RZ, with tanh'' = -2 tanh (1 - tanh^2).
        const auto Ap = ws.A[l - 1].leftCols(k).array();
        RDprev.array() += T.array() * (-2.0 * Ap * (1.0 - Ap.square())) * ws.RZ[l - 1].leftCols(k).array();
      }
      Dprev = T;
      times_act_prime(ws.Z[l - 1], ws.A[l - 1], k, Dprev);
    }
  }

  Data s_, q_;
  bool same_query_;
  Index m_, n_ = 0;
  std::vector<Index> d_;
  std::vector<Index> woff_, boff_;
  Activation act_;
  LossKind loss_;
};

}  // namespace fobmaml
