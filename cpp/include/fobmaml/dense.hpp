// Dense kernels that Eigen's expressions do not fuse.
#pragma once

#include <Eigen/Core>

#include "types.hpp"

namespace fobmaml {

namespace detail {

using Packet = Eigen::internal::packet_traits<double>::type;
constexpr Index kPacket = Eigen::internal::packet_traits<double>::size;

// Makes the compiler hold `p` in a register: otherwise GCC folds the load of a row of A
// into each of the P multiply-adds that use it, which loads every element of A P times
// from cache (perf annotate: 14 loads per 12 FMAs for P = 2, and the loop was bound by
// the load ports whenever A sits in cache). An empty asm, so the arithmetic is unchanged.
inline void keep_in_register(Packet& p) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  asm("" : "+x"(p));
#else
  (void)p;
#endif
}

// Y[:, j] = A X[:, j] for P columns and the R rows r0..r0+R-1 of A, reading those rows once.
template <int P, int R>
inline void multi_matvec_rows(const double* A, Index lda, Index n, const double* const* X, double* const* Y,
                              Index r0) {
  using namespace Eigen::internal;
  Packet acc[R][P];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < P; ++j) acc[r][j] = pset1<Packet>(0.0);
  const double* a[R];
  for (int r = 0; r < R; ++r) a[r] = A + (r0 + r) * lda;
  Index k = 0;
  for (; k + kPacket <= n; k += kPacket) {
    Packet x[P];
    for (int j = 0; j < P; ++j) x[j] = ploadu<Packet>(X[j] + k);
    for (int r = 0; r < R; ++r) {
      Packet ar = ploadu<Packet>(a[r] + k);
      if (P > 1) keep_in_register(ar);
      for (int j = 0; j < P; ++j) acc[r][j] = pmadd(ar, x[j], acc[r][j]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < P; ++j) {
      double s = predux(acc[r][j]);
      for (Index t = k; t < n; ++t) s += a[r][t] * X[j][t];
      Y[j][r0 + r] = s;
    }
}

template <int P>
inline void multi_matvec(const double* A, Index rows, Index n, Index lda, const double* const* X,
                         double* const* Y) {
  // R * P accumulators (+ P + 1 loaded packets) within the 16 vector registers; more
  // rows at once keep more memory streams in flight.
  constexpr int R = P == 1 ? 8 : (P == 2 ? 6 : 4);
  Index r = 0;
  for (; r + R <= rows; r += R) multi_matvec_rows<P, R>(A, lda, n, X, Y, r);
  for (; r < rows; ++r) multi_matvec_rows<P, 1>(A, lda, n, X, Y, r);
}

}  // namespace detail

// G[:, j] = A Phi[:, j] for every column j (at most 3), with A row-major (rows x n):
// one pass over A for all columns, so that iterating phi, psi+ and psi- together costs
// about one matrix-vector product when A does not fit in cache. Sums run in a fixed
// order with unaligned loads, so the result does not depend on the alignment of A.
inline void multi_matvec(const Eigen::Map<const RowMat>& A, BlockIn Phi, BlockOut G) {
  const double* X[3];
  double* Y[3];
  const Index p = Phi.cols();
  for (Index j = 0; j < p; ++j) {
    X[j] = Phi.col(j).data();
    Y[j] = G.col(j).data();
  }
  const Index lda = A.outerStride();
  switch (p) {
    case 1:
      detail::multi_matvec<1>(A.data(), A.rows(), A.cols(), lda, X, Y);
      break;
    case 2:
      detail::multi_matvec<2>(A.data(), A.rows(), A.cols(), lda, X, Y);
      break;
    default:
      detail::multi_matvec<3>(A.data(), A.rows(), A.cols(), lda, X, Y);
      break;
  }
}

}  // namespace fobmaml
