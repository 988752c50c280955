// Micro-benchmarks compiled with the kernels' own flags, for bench/roofline.py: a plain Eigen
// GEMM of a given shape (the ceiling the convolution kernels are judged against), and one
// Conv1d forward pass in two forms (im2col + one GEMM, as the kernels compute it, against a
// direct form with one small GEMM per sample and kernel tap).
#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <vector>

#include "common.hpp"
#include "fobmaml/nn/conv1d.hpp"

namespace fobmaml::bindings {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Best GFLOP/s over `reps` runs of C = A B, (rows x depth) (depth x cols), each of `threads`
// threads multiplying its own matrices at once (as threads run tasks), counting 2 flops per
// multiply-add.
double gemm_gflops(Index rows, Index depth, Index cols, int reps, int threads) {
  if (rows < 1 || depth < 1 || cols < 1 || reps < 1) throw py::value_error("sizes and `reps` must be >= 1");
  const int t = threads > 0 ? threads : max_threads();
  std::vector<Mat> A(t), B(t), C(t);
  for (int i = 0; i < t; ++i) {
    A[i] = Mat::Random(rows, depth);
    B[i] = Mat::Random(depth, cols);
    C[i].resize(rows, cols);
  }
  double best = 0.0;
  {
    py::gil_scoped_release release;
    for (int r = 0; r < reps; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel for num_threads(t) schedule(static, 1)
      for (int i = 0; i < t; ++i) C[i].noalias() = A[i] * B[i];
      const double s = seconds_since(t0);
      best = std::max(best, 2.0 * static_cast<double>(rows * depth * cols) * t / s / 1e9);
    }
  }
  if (!C[0].allFinite()) throw std::runtime_error("gemm_gflops: non-finite result");
  return best;
}

// One Conv1d forward pass over `samples` signals (C_in, L), on one thread, in both forms:
// (im2col seconds, direct seconds, largest difference of their outputs), best of `reps`.
py::tuple conv1d_forms(Index c_in, Index c_out, Index kernel, Index stride, Index pad, Index length,
                       Index samples, int reps) {
  if (c_in < 1 || c_out < 1 || kernel < 1 || stride < 1 || pad < 0 || samples < 1 || reps < 1)
    throw py::value_error("sizes must be >= 1 and `pad` >= 0");
  const Index padded = length + 2 * pad;
  if (padded < kernel) throw py::value_error("`kernel` is larger than the padded input");
  const Index L_out = (padded - kernel) / stride + 1;
  const nn::Window w{c_in, length, L_out, kernel, stride, pad};
  const RowMat W = RowMat::Random(c_out, c_in * kernel);
  const Mat X = Mat::Random(c_in, length * samples);
  Mat cols(c_in * kernel, L_out * samples), Y1(c_out, L_out * samples), Y2(c_out, L_out * samples);
  std::vector<Mat> taps(static_cast<std::size_t>(kernel));  // W[:, :, j] as contiguous (C_out, C_in)
  for (Index j = 0; j < kernel; ++j) {
    taps[static_cast<std::size_t>(j)].resize(c_out, c_in);
    for (Index i = 0; i < c_in; ++i) taps[static_cast<std::size_t>(j)].col(i) = W.col(i * kernel + j);
  }
  double best_im2col = 1e300, best_direct = 1e300;
  {
    py::gil_scoped_release release;
    for (int r = 0; r < reps; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      nn::im2col(X, w, samples, cols);
      Y1.noalias() = W * cols;
      best_im2col = std::min(best_im2col, seconds_since(t0));

      t0 = std::chrono::steady_clock::now();
      Y2.setZero();
      for (Index s = 0; s < samples; ++s)
        for (Index j = 0; j < kernel; ++j) {
          // Outputs t whose input position t stride + j - pad lies inside the signal.
          Index t_lo = 0;
          while (t_lo < L_out && t_lo * stride + j - pad < 0) ++t_lo;
          Index t_hi = t_lo;
          while (t_hi < L_out && t_hi * stride + j - pad < length) ++t_hi;
          if (t_hi <= t_lo) continue;
          const Index n = t_hi - t_lo;
          const Eigen::Map<const Mat, 0, Eigen::OuterStride<>> Xj(
              X.data() + (s * length + t_lo * stride + j - pad) * c_in, c_in, n,
              Eigen::OuterStride<>(stride * c_in));
          Y2.middleCols(s * L_out + t_lo, n).noalias() += taps[static_cast<std::size_t>(j)] * Xj;
        }
      best_direct = std::min(best_direct, seconds_since(t0));
    }
  }
  return py::make_tuple(best_im2col, best_direct, (Y1 - Y2).cwiseAbs().maxCoeff());
}

}  // namespace

void bind_bench(py::module_& m) {
  m.def("gemm_gflops", &gemm_gflops, py::arg("rows"), py::arg("depth"), py::arg("cols"), py::arg("reps") = 10,
        py::arg("threads") = 0,
        "Best GFLOP/s of a plain Eigen GEMM (rows x depth)(depth x cols), one per thread at once.");
  m.def("conv1d_forms", &conv1d_forms, py::arg("c_in"), py::arg("c_out"), py::arg("kernel"),
        py::arg("stride"), py::arg("pad"), py::arg("length"), py::arg("samples"), py::arg("reps") = 10,
        "Seconds of one Conv1d forward pass as im2col + GEMM and in a direct form (one GEMM per "
        "sample and tap), and the largest difference of their outputs.");
}

}  // namespace fobmaml::bindings
