// The index work of Conv1d and the 1-D pools on the storage layout of network.hpp: a signal
// (C, L) of k samples is a column-major C x (L k) block, entry (c, s L + t). The arithmetic
// of Conv1d is then one GEMM per pass: out = W * im2col(in), with W the (C_out, C_in K)
// row-major weight in torch's order.
#pragma once

#include <Eigen/Core>
#include <algorithm>

#include "../types.hpp"

namespace fobmaml::nn {

using IndexMat = Eigen::Matrix<Index, Eigen::Dynamic, Eigen::Dynamic>;

// Geometry of a windowed layer (Conv1d, MaxPool1d, AvgPool1d) on one sample.
struct Window {
  Index channels;  // C_in
  Index len_in;    // L_in
  Index len_out;   // L_out
  Index kernel;    // K
  Index stride;
  Index pad;  // zeros on the left (the right padding only shows in len_out)

  // The kernel taps j in [lo, hi) whose input position t stride + j - pad lies in [0, L_in);
  // 0 <= lo <= hi <= K (a window entirely in the padding has lo = hi).
  Index tap_lo(Index t) const { return std::min<Index>(kernel, std::max<Index>(0, pad - t * stride)); }
  Index tap_hi(Index t) const {
    return std::max<Index>(tap_lo(t), std::min<Index>(kernel, len_in + pad - t * stride));
  }
};

// cols (C K) x (L_out k): cols(c K + j, s L_out + t) = in(c, s L_in + t stride + j - pad), 0 in
// the padding. Row order c K + j matches the weight's (out, in, kernel) layout.
template <class In, class Out>
void im2col(const In& in, const Window& w, Index k, Out&& cols) {
  const Index C = w.channels, K = w.kernel;
  for (Index s = 0; s < k; ++s)
    for (Index t = 0; t < w.len_out; ++t) {
      double* dst = cols.col(s * w.len_out + t).data();
      const Index lo = w.tap_lo(t), hi = w.tap_hi(t), p0 = s * w.len_in + t * w.stride - w.pad;
      for (Index c = 0; c < C; ++c) {
        double* d = dst + c * K;
        for (Index j = 0; j < lo; ++j) d[j] = 0.0;
        for (Index j = lo; j < hi; ++j) d[j] = in(c, p0 + j);
        for (Index j = hi; j < K; ++j) d[j] = 0.0;
      }
    }
}

// The adjoint of im2col: out (C, L_in k) = sum of the columns' entries at their input
// positions (padding entries dropped). out is overwritten.
template <class Cols, class Out>
void col2im(const Cols& cols, const Window& w, Index k, Out&& out) {
  const Index C = w.channels, K = w.kernel;
  out.setZero();
  for (Index s = 0; s < k; ++s)
    for (Index t = 0; t < w.len_out; ++t) {
      const double* src = cols.col(s * w.len_out + t).data();
      const Index lo = w.tap_lo(t), hi = w.tap_hi(t), p0 = s * w.len_in + t * w.stride - w.pad;
      for (Index c = 0; c < C; ++c)
        for (Index j = lo; j < hi; ++j) out(c, p0 + j) += src[c * K + j];
    }
}

// Max pooling: out(c, s L_out + t) = max over the window; arg holds the input column of the
// maximum (the first one on a tie, as torch picks it).
template <class In, class Out>
void maxpool_forward(const In& in, const Window& w, Index k, Out&& out, IndexMat& arg) {
  for (Index s = 0; s < k; ++s)
    for (Index t = 0; t < w.len_out; ++t) {
      const Index o = s * w.len_out + t, p0 = s * w.len_in + t * w.stride;
      for (Index c = 0; c < w.channels; ++c) {
        Index best = p0;
        double v = in(c, p0);
        for (Index j = 1; j < w.kernel; ++j)
          if (in(c, p0 + j) > v) {
            v = in(c, p0 + j);
            best = p0 + j;
          }
        out(c, o) = v;
        arg(c, o) = best;
      }
    }
}

// out(c, s L_out + t) = in(c, arg(c, s L_out + t)): the max pool's linear map at fixed arg
// (its R-forward).
template <class In, class Out>
void maxpool_gather(const In& in, const IndexMat& arg, Index cols, Out&& out) {
  for (Index o = 0; o < cols; ++o)
    for (Index c = 0; c < out.rows(); ++c) out(c, o) = in(c, arg(c, o));
}

// Its adjoint: out = 0, then out(c, arg(c, o)) += g(c, o).
template <class G, class Out>
void maxpool_scatter(const G& g, const IndexMat& arg, Index cols, Out&& out) {
  out.setZero();
  for (Index o = 0; o < cols; ++o)
    for (Index c = 0; c < g.rows(); ++c) out(c, arg(c, o)) += g(c, o);
}

// Average pooling (no padding): out = the window's sum / K.
template <class In, class Out>
void avgpool_forward(const In& in, const Window& w, Index k, Out&& out) {
  const double inv = 1.0 / static_cast<double>(w.kernel);
  for (Index s = 0; s < k; ++s)
    for (Index t = 0; t < w.len_out; ++t) {
      const Index o = s * w.len_out + t, p0 = s * w.len_in + t * w.stride;
      out.col(o) = in.col(p0);
      for (Index j = 1; j < w.kernel; ++j) out.col(o) += in.col(p0 + j);
      out.col(o) *= inv;
    }
}

// Its adjoint: out = 0, then every window position receives g / K.
template <class G, class Out>
void avgpool_backward(const G& g, const Window& w, Index k, Out&& out) {
  const double inv = 1.0 / static_cast<double>(w.kernel);
  out.setZero();
  for (Index s = 0; s < k; ++s)
    for (Index t = 0; t < w.len_out; ++t) {
      const Index o = s * w.len_out + t, p0 = s * w.len_in + t * w.stride;
      for (Index j = 0; j < w.kernel; ++j) out.col(p0 + j) += inv * g.col(o);
    }
}

// Flatten: a signal block (C, L k) to the flat (C L, k) block in torch's channel-major
// order, out(c L + t, s) = in(c, s L + t); and back.
template <class In, class Out>
void flatten_forward(const In& in, Index C, Index L, Index k, Out&& out) {
  for (Index s = 0; s < k; ++s)
    for (Index t = 0; t < L; ++t)
      for (Index c = 0; c < C; ++c) out(c * L + t, s) = in(c, s * L + t);
}

template <class In, class Out>
void flatten_backward(const In& g, Index C, Index L, Index k, Out&& out) {
  for (Index s = 0; s < k; ++s)
    for (Index t = 0; t < L; ++t)
      for (Index c = 0; c < C; ++c) out(c, s * L + t) = g(c * L + t, s);
}

}  // namespace fobmaml::nn
