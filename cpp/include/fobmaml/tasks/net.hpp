// The sequential-network task family (docs/estimators.md, "Task families"): task i adapts
// a network (nn/network.hpp) on its support set and is judged on its query set, with
//   mse:  mean over all output elements of (yhat - y)^2
//   xent: mean over samples of -log softmax(yhat)[label].
// An MLP is the case of Linear and activation layers only.
//
// Gradients are exact (backpropagation); Hessian-vector products are exact (Pearlmutter's
// R-operator, forward-over-reverse), with relu'' = 0 and max pooling routed through the
// position of the maximum (its own second derivative is 0).
//
// The caller's row-major (m, k, *input_shape) inputs are read in place: a flat input
// (d) of task i is the column-major d x k block at X + i k d; a signal input (C, L) is
// copied into the layers' storage layout (see network.hpp) at the start of each pass.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "../nn/activations.hpp"
#include "../nn/conv1d.hpp"
#include "../nn/network.hpp"
#include "../types.hpp"

namespace fobmaml {

enum class LossKind : int { mse = 0, xent };

class NetTasks {
 public:
  using LayerKind = nn::LayerKind;
  using CMap = Eigen::Map<const Mat>;  // a boundary's k samples: contiguous columns
  using WMap = Eigen::Map<const RowMat>;
  using WOut = Eigen::Map<RowMat>;

  // One data set (support or query) of m tasks with k samples each.
  struct Data {
    const double* X = nullptr;        // (m, k, *input_shape) row-major
    const double* Y = nullptr;        // (m, k, d_out) row-major targets (mse)
    const std::int64_t* L = nullptr;  // (m, k) labels in [0, d_out) (xent)
    Index k = 0;
  };

  // The buffers of one forward/backward pass over up to kmax samples. A[b], D[b]: the
  // activation at boundary b and dLoss/dA[b]; RA, RD: their directional derivatives
  // (allocated only for HVPs); cols[l], rcols[l]: im2col of a Conv1d layer's input and of
  // its R; arg[l]: a max pool's argmax; back: a Conv1d layer's W^T D before col2im.
  struct Pass {
    std::vector<Mat> A, D, RA, RD, cols, rcols;
    std::vector<nn::IndexMat> arg;
    Mat back;
    Vec prob;
  };

  // Per-thread scratch: one Pass per column thread (columns of a block, such as FO-B-MAML's
  // psi+ and psi-, run in parallel when a batch has fewer tasks than threads), and the
  // support and query inputs of one task side by side (the combined gradient).
  struct Workspace {
    std::vector<Pass> passes;
    Mat X_both;
    Index X_both_task = -1;
  };

  NetTasks(Data support, Data query, bool same_query, Index m, nn::Network net, LossKind loss)
      : s_(support), q_(query), same_query_(same_query), m_(m), net_(std::move(net)), loss_(loss) {
    const Index L = net_.num_layers();
    first_param_ = L;
    for (Index l = 0; l < L; ++l)
      if (net_.layer(l).has_params()) {
        first_param_ = l;
        break;
      }
  }

  Index num_tasks() const { return m_; }
  Index dim() const { return net_.num_params(); }
  bool query_is_support() const { return same_query_; }
  const nn::Network& network() const { return net_; }

  // One forward + backward pass over the larger data set: ~6 k (multiply-adds per sample).
  double gradient_flops() const {
    return 6.0 * net_.macs_per_sample() * static_cast<double>(std::max(s_.k, q_.k));
  }

  Workspace make_workspace(const FamilyOptions& opt) const {
    Workspace ws;
    layout(ws, opt, [](auto& buffer, Index rows, Index cols) { buffer.resize(rows, cols); });
    return ws;
  }
  std::size_t workspace_bytes(const FamilyOptions& opt) const {
    Workspace ws;
    std::size_t bytes = 0;
    layout(ws, opt, [&](auto& buffer, Index rows, Index cols) {
      bytes +=
          static_cast<std::size_t>(rows * cols) * sizeof(typename std::decay_t<decltype(buffer)>::Scalar);
    });
    return bytes;
  }

  double support_loss(Index i, VecIn phi, Workspace& ws) const {
    return loss_and_grad(s_, i, phi, nullptr, ws);
  }
  double query_loss(Index i, VecIn phi, Workspace& ws) const {
    return loss_and_grad(q_, i, phi, nullptr, ws);
  }

  void support_grad(Index i, BlockIn Phi, BlockOut G, Workspace& ws) const {
    over_columns(Phi.cols(), ws,
                 [&](Index j, Pass& p) { loss_and_grad(s_, i, Phi.col(j), G.col(j).data(), p); });
  }
  void query_grad(Index i, BlockIn Phi, BlockOut G, Workspace& ws) const {
    over_columns(Phi.cols(), ws,
                 [&](Index j, Pass& p) { loss_and_grad(q_, i, Phi.col(j), G.col(j).data(), p); });
  }
  void support_hvp(Index i, VecIn phi, VecIn v, VecOut out, Workspace& ws) const {
    hvp(s_, i, phi, v, out, ws.passes[0]);
  }
  void query_hvp(Index i, VecIn phi, VecIn v, VecOut out, Workspace& ws) const {
    hvp(q_, i, phi, v, out, ws.passes[0]);
  }

  // G[:, j] = grad g(Phi[:, j]) + s_j grad f(Phi[:, j]): the support loss plus s_j times the
  // query loss, in one forward and one backward pass over the support and query samples side
  // by side (the objective-perturbed inner loop of FO-B-MAML).
  static constexpr bool has_combined_grad = true;
  void combined_grad(Index i, BlockIn Phi, const double* s, BlockOut G, Workspace& ws) const {
    if (same_query_) {
      support_grad(i, Phi, G, ws);
      for (Index j = 0; j < Phi.cols(); ++j) G.col(j) *= 1.0 + s[j];
      return;
    }
    if (ws.X_both_task != i) {
      const Index d = net_.input_size();
      std::memcpy(ws.X_both.data(), input(s_, i), sizeof(double) * static_cast<std::size_t>(s_.k * d));
      std::memcpy(ws.X_both.data() + s_.k * d, input(q_, i),
                  sizeof(double) * static_cast<std::size_t>(q_.k * d));
      ws.X_both_task = i;
    }
    const Index k = s_.k + q_.k;
    over_columns(Phi.cols(), ws, [&](Index j, Pass& p) {
      forward(ws.X_both.data(), k, Phi.col(j), p);
      output_grad(s_, i, 0, 1.0, p);
      output_grad(q_, i, s_.k, s[j], p);
      backward(ws.X_both.data(), k, Phi.col(j), G.col(j).data(), p);
    });
  }

  // Fraction of query samples whose largest output is the label (xent); NaN for mse.
  double query_accuracy(Index i, VecIn phi, Workspace& ws) const {
    if (loss_ != LossKind::xent) return std::numeric_limits<double>::quiet_NaN();
    Pass& p = ws.passes[0];
    forward(input(q_, i), q_.k, phi, p);
    const auto out = p.A[net_.num_layers()].leftCols(q_.k);
    const std::int64_t* lab = q_.L + i * q_.k;
    Index hits = 0;
    for (Index s = 0; s < q_.k; ++s) {
      Index arg;
      out.col(s).maxCoeff(&arg);
      hits += (arg == lab[s]);
    }
    return static_cast<double>(hits) / static_cast<double>(q_.k);
  }

  // The network's outputs for k samples (row-major (k, *input_shape) inputs) into the
  // column-major d_out x k block `out`.
  void predict(const double* X, Index k, VecIn phi, Eigen::Ref<Mat> out, Workspace& ws) const {
    Pass& p = ws.passes[0];
    forward(X, k, phi, p);
    out = p.A[net_.num_layers()].leftCols(k);
  }

  static constexpr bool has_direct_solve = false;

 private:
  // -- buffers --------------------------------------------------------------------------------
  // The one description of the workspace's buffers: make_workspace allocates them and
  // workspace_bytes adds them up, so the prediction is the allocation.
  template <class Visit>
  void layout(Workspace& ws, const FamilyOptions& opt, Visit&& visit) const {
    const Index L = net_.num_layers();
    const Index kmax = same_query_ ? std::max(s_.k, q_.k) : s_.k + q_.k;
    const Index cols_in = net_.cols_per_sample(0) * kmax;
    ws.passes.resize(static_cast<std::size_t>(std::max(1, opt.column_threads)));
    for (Pass& p : ws.passes) {
      for (auto* v : {&p.A, &p.D, &p.RA, &p.RD, &p.cols, &p.rcols})
        v->resize(static_cast<std::size_t>(L + 1));
      p.arg.resize(static_cast<std::size_t>(L));
      if (!net_.shape(0).flat) visit(p.A[0], net_.rows(0), cols_in);  // the signal input, laid out
      Index back_rows = 0, back_cols = 0;
      for (Index b = 1; b <= L; ++b) {
        const Index rows = net_.rows(b), cols = net_.cols_per_sample(b) * kmax;
        visit(p.A[b], rows, cols);
        if (b <= first_param_ && b < L) continue;  // no gradient flows below the first parameters
        visit(p.D[b], rows, cols);
        if (opt.hvp) {
          visit(p.RA[b], rows, cols);
          visit(p.RD[b], rows, cols);
        }
      }
      for (Index l = 0; l < L; ++l) {
        const nn::LayerSpec& s = net_.layer(l);
        const Index out_cols = net_.cols_per_sample(l + 1) * kmax;
        if (s.kind == LayerKind::conv1d) {
          const Index rows = s.in * s.kernel;
          visit(p.cols[l], rows, out_cols);
          if (opt.hvp && l > first_param_) visit(p.rcols[l], rows, out_cols);
          if (l > first_param_) {
            back_rows = std::max(back_rows, rows);
            back_cols = std::max(back_cols, out_cols);
          }
        }
        if (s.kind == LayerKind::maxpool1d) visit(p.arg[l], net_.rows(l + 1), out_cols);
      }
      visit(p.back, back_rows, back_cols);
      visit(p.prob, net_.output_size(), 1);
    }
    if (!same_query_) visit(ws.X_both, net_.input_size(), s_.k + q_.k);
  }

  // Runs body(j, pass) for the p columns of a block: on the workspace's column threads
  // when it has several (each column on its own Pass), else one after the other. Every
  // column is computed the same way on either path, so the results do not depend on it.
  template <class Body>
  void over_columns(Index p, Workspace& ws, Body&& body) const {
    const int threads = static_cast<int>(std::min<Index>(p, static_cast<Index>(ws.passes.size())));
    if (threads <= 1) {
      for (Index j = 0; j < p; ++j) body(j, ws.passes[0]);
      return;
    }
#pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (Index j = 0; j < p; ++j) {
#ifdef _OPENMP
      body(j, ws.passes[static_cast<std::size_t>(omp_get_thread_num())]);
#else
      body(j, ws.passes[0]);
#endif
    }
  }

  // -- views ----------------------------------------------------------------------------------
  const double* input(const Data& D, Index i) const { return D.X + i * D.k * net_.input_size(); }
  WMap W(VecIn phi, Index l) const {
    const nn::LayerSpec& s = net_.layer(l);
    return WMap(phi.data() + net_.weight_offset(l), s.out, s.weight_size() / s.out);
  }
  Eigen::Map<const Vec> b(VecIn phi, Index l) const {
    return Eigen::Map<const Vec>(phi.data() + net_.bias_offset(l), net_.layer(l).out);
  }
  nn::Window window(Index l) const {
    const nn::LayerSpec& s = net_.layer(l);
    return {net_.shape(l).channels,
            net_.shape(l).length,
            net_.shape(l + 1).length,
            s.kernel,
            s.stride,
            s.pad_left};
  }
  Index cols(Index b, Index k) const { return net_.cols_per_sample(b) * k; }

  // Boundary b's activations for k samples: the input (in place if flat) or A[b].
  CMap act(const double* X, Index b, Index k, const Pass& p) const {
    if (b == 0 && net_.shape(0).flat) return CMap(X, net_.rows(0), k);
    const Mat& A = p.A[static_cast<std::size_t>(b)];
    return CMap(A.data(), A.rows(), cols(b, k));
  }

  // -- forward ---------------------------------------------------------------------------------
  void forward(const double* X, Index k, VecIn phi, Pass& p) const {
    if (!net_.shape(0).flat) {  // (k, C, L) row-major -> C x (L k), sample by sample
      const Index C = net_.shape(0).channels, Lin = net_.shape(0).length;
      for (Index s = 0; s < k; ++s)
        p.A[0].middleCols(s * Lin, Lin) = Eigen::Map<const RowMat>(X + s * C * Lin, C, Lin);
    }
    for (Index l = 0; l < net_.num_layers(); ++l) layer_forward(l, act(X, l, k, p), k, phi, p);
  }

  void layer_forward(Index l, const CMap& in, Index k, VecIn phi, Pass& p) const {
    const nn::LayerSpec& s = net_.layer(l);
    auto out = p.A[l + 1].leftCols(cols(l + 1, k));
    switch (s.kind) {
      case LayerKind::linear:
        out.noalias() = W(phi, l) * in;
        if (s.bias) out.colwise() += b(phi, l);
        break;
      case LayerKind::conv1d: {
        auto cl = p.cols[l].leftCols(out.cols());
        nn::im2col(in, window(l), k, cl);
        out.noalias() = W(phi, l) * cl;
        if (s.bias) out.colwise() += b(phi, l);
        break;
      }
      case LayerKind::relu:
        out = in.cwiseMax(0.0);
        break;
      case LayerKind::tanh:
        nn::vector_tanh(in.array(), out.array());
        break;
      case LayerKind::maxpool1d:
        nn::maxpool_forward(in, window(l), k, out, p.arg[l]);
        break;
      case LayerKind::avgpool1d:
        nn::avgpool_forward(in, window(l), k, out);
        break;
      case LayerKind::flatten:
        if (net_.shape(l).flat)
          out = in;
        else
          nn::flatten_forward(in, net_.shape(l).channels, net_.shape(l).length, k, out);
        break;
    }
  }

  // -- loss -------------------------------------------------------------------------------------
  // For data set D of task i, whose k samples sit in columns c0..c0+k-1 of the forward pass
  // in p: weight * dLoss/dOutput into those columns of D[L]; returns the loss.
  double output_grad(const Data& D, Index i, Index c0, double weight, Pass& p) const {
    const Index L = net_.num_layers(), k = D.k, dout = net_.output_size();
    const auto Z = p.A[L].middleCols(c0, k);
    auto G = p.D[L].middleCols(c0, k);
    if (loss_ == LossKind::mse) {
      const Eigen::Map<const Mat> Y(D.Y + i * k * dout, dout, k);
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

  // -- backward --------------------------------------------------------------------------------
  // Backpropagation of D[L] (for the k samples of the forward pass on X) into grad. Layers
  // below the first one with parameters need no backward pass.
  void backward(const double* X, Index k, VecIn phi, double* grad, Pass& p) const {
    for (Index l = net_.num_layers() - 1; l >= first_param_; --l) {
      const nn::LayerSpec& s = net_.layer(l);
      const CMap in = act(X, l, k, p);
      const auto Dout = p.D[l + 1].leftCols(cols(l + 1, k));
      const bool down = l > first_param_;  // D[l] is needed below
      auto Din = p.D[l].leftCols(down ? cols(l, k) : 0);
      switch (s.kind) {
        case LayerKind::linear:
        case LayerKind::conv1d: {
          const bool conv = s.kind == LayerKind::conv1d;
          WOut gW(grad + net_.weight_offset(l), s.out, s.weight_size() / s.out);
          if (conv)
            gW.noalias() = Dout * p.cols[l].leftCols(Dout.cols()).transpose();
          else
            gW.noalias() = Dout * in.transpose();
          if (s.bias) Eigen::Map<Vec>(grad + net_.bias_offset(l), s.out) = Dout.rowwise().sum();
          if (!down) break;
          if (conv) {
            auto back = p.back.topLeftCorner(s.in * s.kernel, Dout.cols());
            back.noalias() = W(phi, l).transpose() * Dout;
            nn::col2im(back, window(l), k, Din);
          } else {
            Din.noalias() = W(phi, l).transpose() * Dout;
          }
          break;
        }
        default:
          param_free_backward(l, in, Dout, k, Din, p);
      }
    }
  }

  // Din = J^T Dout for a layer without parameters (J its Jacobian at the forward pass).
  template <class G, class Out>
  void param_free_backward(Index l, const CMap& in, const G& Dout, Index k, Out&& Din, const Pass& p) const {
    const auto A = p.A[l + 1].leftCols(Dout.cols());
    switch (net_.layer(l).kind) {
      case LayerKind::relu:
        Din.array() = Dout.array() * (in.array() > 0.0).template cast<double>();
        break;
      case LayerKind::tanh:
        Din.array() = Dout.array() * (1.0 - A.array().square());
        break;
      case LayerKind::maxpool1d:
        nn::maxpool_scatter(Dout, p.arg[l], Dout.cols(), Din);
        break;
      case LayerKind::avgpool1d:
        nn::avgpool_backward(Dout, window(l), k, Din);
        break;
      case LayerKind::flatten:
        if (net_.shape(l).flat)
          Din = Dout;
        else
          nn::flatten_backward(Dout, net_.shape(l).channels, net_.shape(l).length, k, Din);
        break;
      default:
        break;
    }
  }

  // Loss of task i at phi on data set D; if grad is non-null, its gradient (n entries) too.
  double loss_and_grad(const Data& D, Index i, VecIn phi, double* grad, Pass& p) const {
    const double* X = input(D, i);
    forward(X, D.k, phi, p);
    const double value = output_grad(D, i, 0, 1.0, p);
    if (grad) backward(X, D.k, phi, grad, p);
    return value;
  }
  double loss_and_grad(const Data& D, Index i, VecIn phi, double* grad, Workspace& ws) const {
    return loss_and_grad(D, i, phi, grad, ws.passes[0]);
  }

  // -- Hessian-vector product -------------------------------------------------------------------
  // out = (d^2 loss / d phi^2) v, by forward-over-reverse. RA[b] is zero for b <= first_param_
  // (no parameter below it), and those terms are skipped.
  void hvp(const Data& D, Index i, VecIn phi, VecIn v, VecOut out, Pass& p) const {
    const Index L = net_.num_layers(), k = D.k, dout = net_.output_size();
    const double* X = input(D, i);
    forward(X, k, phi, p);
    for (Index l = first_param_; l < L; ++l) r_forward(l, act(X, l, k, p), k, phi, v, p);
    // Output: D = dLoss/dZ, RD = (d^2 Loss/dZ^2) RZ.
    output_grad(D, i, 0, 1.0, p);
    auto RDout = p.RD[L].leftCols(k);
    const auto RZout = p.RA[L].leftCols(k);
    if (loss_ == LossKind::mse) {
      RDout = (2.0 / static_cast<double>(k * dout)) * RZout;
    } else {
      // Softmax Hessian per sample: diag(p) - p p^T, with p recovered from D (= (p - e_y)/k).
      const std::int64_t* lab = D.L + i * k;
      for (Index s = 0; s < k; ++s) {
        p.prob = static_cast<double>(k) * p.D[L].col(s);
        p.prob[lab[s]] += 1.0;
        RDout.col(s) = p.prob.cwiseProduct(RZout.col(s)) - p.prob * p.prob.dot(RZout.col(s));
      }
      RDout /= static_cast<double>(k);
    }
    for (Index l = L - 1; l >= first_param_; --l) r_backward(l, act(X, l, k, p), k, phi, v, out, p);
  }

  // RA[l + 1] = the directional derivative of layer l's output along v.
  void r_forward(Index l, const CMap& in, Index k, VecIn phi, VecIn v, Pass& p) const {
    const nn::LayerSpec& s = net_.layer(l);
    auto Rout = p.RA[l + 1].leftCols(cols(l + 1, k));
    const bool rin = l > first_param_;  // is RA[l] nonzero?
    const auto Rin = p.RA[l].leftCols(rin ? cols(l, k) : 0);
    switch (s.kind) {
      case LayerKind::linear:
        Rout.noalias() = W(v, l) * in;
        if (rin) Rout.noalias() += W(phi, l) * Rin;
        if (s.bias) Rout.colwise() += b(v, l);
        break;
      case LayerKind::conv1d: {
        Rout.noalias() = W(v, l) * p.cols[l].leftCols(Rout.cols());
        if (rin) {
          auto rc = p.rcols[l].leftCols(Rout.cols());
          nn::im2col(Rin, window(l), k, rc);
          Rout.noalias() += W(phi, l) * rc;
        }
        if (s.bias) Rout.colwise() += b(v, l);
        break;
      }
      case LayerKind::relu:
        Rout.array() = Rin.array() * (in.array() > 0.0).template cast<double>();
        break;
      case LayerKind::tanh:
        Rout.array() = Rin.array() * (1.0 - p.A[l + 1].leftCols(Rout.cols()).array().square());
        break;
      case LayerKind::maxpool1d:
        nn::maxpool_gather(Rin, p.arg[l], Rout.cols(), Rout);
        break;
      case LayerKind::avgpool1d:
        nn::avgpool_forward(Rin, window(l), k, Rout);
        break;
      case LayerKind::flatten:
        if (net_.shape(l).flat)
          Rout = Rin;
        else
          nn::flatten_forward(Rin, net_.shape(l).channels, net_.shape(l).length, k, Rout);
        break;
    }
  }

  // Layer l's part of the HVP (its parameters' rows of out) and, below it, D[l] and RD[l].
  void r_backward(Index l, const CMap& in, Index k, VecIn phi, VecIn v, VecOut out, Pass& p) const {
    const nn::LayerSpec& s = net_.layer(l);
    const auto Dout = p.D[l + 1].leftCols(cols(l + 1, k));
    const auto RDout = p.RD[l + 1].leftCols(Dout.cols());
    const bool down = l > first_param_;
    const Index nin = down ? cols(l, k) : 0;
    auto Din = p.D[l].leftCols(nin);
    auto RDin = p.RD[l].leftCols(nin);
    const auto Rin = p.RA[l].leftCols(nin);
    switch (s.kind) {
      case LayerKind::linear:
      case LayerKind::conv1d: {
        const bool conv = s.kind == LayerKind::conv1d;
        WOut hW(out.data() + net_.weight_offset(l), s.out, s.weight_size() / s.out);
        if (conv) {
          hW.noalias() = RDout * p.cols[l].leftCols(Dout.cols()).transpose();
          if (down) hW.noalias() += Dout * p.rcols[l].leftCols(Dout.cols()).transpose();
        } else {
          hW.noalias() = RDout * in.transpose();
          if (down) hW.noalias() += Dout * Rin.transpose();
        }
        if (s.bias) Eigen::Map<Vec>(out.data() + net_.bias_offset(l), s.out) = RDout.rowwise().sum();
        if (!down) break;
        if (conv) {
          auto back = p.back.topLeftCorner(s.in * s.kernel, Dout.cols());
          back.noalias() = W(phi, l).transpose() * Dout;
          nn::col2im(back, window(l), k, Din);
          back.noalias() = W(v, l).transpose() * Dout;
          back.noalias() += W(phi, l).transpose() * RDout;
          nn::col2im(back, window(l), k, RDin);
        } else {
          Din.noalias() = W(phi, l).transpose() * Dout;
          RDin.noalias() = W(v, l).transpose() * Dout;
          RDin.noalias() += W(phi, l).transpose() * RDout;
        }
        break;
      }
      case LayerKind::tanh: {
        // RD_in = RD_out tanh'(z) + D_out tanh''(z) Rz, with tanh'' = -2 tanh (1 - tanh^2).
        const auto Ap = p.A[l + 1].leftCols(Dout.cols()).array();
        RDin.array() = RDout.array() * (1.0 - Ap.square());
        RDin.array() += Dout.array() * (-2.0 * Ap * (1.0 - Ap.square())) * Rin.array();
        Din.array() = Dout.array() * (1.0 - Ap.square());
        break;
      }
      default:  // linear maps at the forward pass (relu'' = 0, max pooling at fixed argmax)
        param_free_backward(l, in, Dout, k, Din, p);
        param_free_backward(l, in, RDout, k, RDin, p);
    }
  }

  Data s_, q_;
  bool same_query_;
  Index m_;
  nn::Network net_;
  LossKind loss_;
  Index first_param_ = 0;  // the lowest layer with parameters
};

}  // namespace fobmaml
