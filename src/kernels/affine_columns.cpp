// The row-wise normalizations' elementwise maps (row_maps.h), forward and backward side
// by side: per-row coefficients, per-column weight and bias. Plain loops for the
// vectorizer; the optional weight and bias are template constants so that each variant
// is one straight loop. Stores are line-aligned after a head (values_before_line, as
// affine.cpp: a buffer from malloc is only 16-byte aligned).
#include "kernels/row_maps.h"
#include "kernels/simd.h"

namespace bnorm::kernels {
namespace {

// y = (((x - hi) - lo) * scale) * w[j] + b[j] for j in [begin, end).
template <bool Weight, bool Bias, class T>
BNORM_INLINE void column_affine_values(const T* x, T* y, int64_t begin, int64_t end,
                                       RowCoefficients<T> c, const T* w, const T* b) {
  for (int64_t j = begin; j < end; ++j) {
    T z = ((x[j] - c.hi) - c.lo) * c.scale;
    if constexpr (Weight) z = z * w[j];
    if constexpr (Bias) z = z + b[j];
    y[j] = z;
  }
}

template <bool Weight, bool Bias, class T>
BNORM_INLINE void column_affine_kernel(const T* x, T* y, int64_t cols, RowCoefficients<T> c,
                                       const T* w, const T* b) {
  const int64_t head = values_before_line(y, cols);
  column_affine_values<Weight, Bias>(x, y, 0, head, c, w, b);
  column_affine_values<Weight, Bias>(x, y, head, cols, c, w, b);
}

template <class T>
BNORM_INLINE void column_affine_row_impl(const T* x, T* y, int64_t cols, RowCoefficients<T> c,
                                         const T* w, const T* b) {
  if (w && b) column_affine_kernel<true, true>(x, y, cols, c, w, b);
  else if (w) column_affine_kernel<true, false>(x, y, cols, c, w, b);
  else if (b) column_affine_kernel<false, true>(x, y, cols, c, w, b);
  else column_affine_kernel<false, false>(x, y, cols, c, w, b);
}

// The column partials of one row, in double (xhat = ((x - hi) - lo) * k; for LayerNorm
// hi + lo is the row's exact mean and k its rstd, for RMSNorm hi = lo = 0):
//   dw[j] += dy * xhat,  db[j] += dy.
template <bool Dw, bool Db, class T>
BNORM_INLINE void column_partials(const T* x, const T* dy, int64_t cols,
                                  BackwardCoefficients<T> c, double* dw, double* db) {
  const double hi = static_cast<double>(c.hi), lo = static_cast<double>(c.lo),
               k = static_cast<double>(c.k);
  for (int64_t j = 0; j < cols; ++j) {
    const double d = static_cast<double>(dy[j]);
    if constexpr (Dw) dw[j] += d * (((static_cast<double>(x[j]) - hi) - lo) * k);
    if constexpr (Db) db[j] += d;
  }
}

// dx = (w[j] * dy) * k + ((x - hi) - lo) * q + r for j in [begin, end), in T.
template <bool Weight, class T>
BNORM_INLINE void column_backward_values(const T* x, const T* dy, const T* w, T* dx,
                                         int64_t begin, int64_t end,
                                         BackwardCoefficients<T> c) {
  for (int64_t j = begin; j < end; ++j) {
    T g = dy[j];
    if constexpr (Weight) g = w[j] * g;
    dx[j] = g * c.k + ((x[j] - c.hi) - c.lo) * c.q + c.r;
  }
}

template <bool Weight, class T>
BNORM_INLINE void column_backward_kernel(const T* x, const T* dy, const T* w, T* dx,
                                         int64_t cols, BackwardCoefficients<T> c) {
  const int64_t head = values_before_line(dx, cols);
  column_backward_values<Weight>(x, dy, w, dx, 0, head, c);
  column_backward_values<Weight>(x, dy, w, dx, head, cols, c);
}

template <class T>
BNORM_INLINE void column_backward_affine_row_impl(const T* x, const T* dy, const T* w, T* dx,
                                                  int64_t cols, BackwardCoefficients<T> c,
                                                  double* dw, double* db) {
  // The partials read dy before dx (which may be dy) is written.
  if (dw && db) column_partials<true, true>(x, dy, cols, c, dw, db);
  else if (dw) column_partials<true, false>(x, dy, cols, c, dw, db);
  else if (db) column_partials<false, true>(x, dy, cols, c, dw, db);
  if (!dx) return;
  if (w) column_backward_kernel<true>(x, dy, w, dx, cols, c);
  else column_backward_kernel<false>(x, dy, w, dx, cols, c);
}

}  // namespace

#define BNORM_DEFINE_COLUMN_MAPS(T)                                                        \
  BNORM_CLONES void column_affine_row(const T* x, T* y, int64_t cols, RowCoefficients<T> c, \
                                      const T* w, const T* b) {                           \
    column_affine_row_impl(x, y, cols, c, w, b);                                           \
  }                                                                                        \
  BNORM_CLONES void column_backward_affine_row(const T* x, const T* dy, const T* w, T* dx, \
                                               int64_t cols, BackwardCoefficients<T> c,    \
                                               double* dw, double* db) {                   \
    column_backward_affine_row_impl(x, dy, w, dx, cols, c, dw, db);                        \
  }

BNORM_DEFINE_COLUMN_MAPS(float)
BNORM_DEFINE_COLUMN_MAPS(double)
#undef BNORM_DEFINE_COLUMN_MAPS

}  // namespace bnorm::kernels
