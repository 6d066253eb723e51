// The row-wise normalizations' elementwise maps (row_maps.h), forward and backward side
// by side: per-row coefficients, per-column weight and bias; the optional parts are
// template constants so that each variant is one straight loop. The forward is a plain
// loop for the vectorizer, its stores line-aligned after a head (values_before_line, as
// affine.cpp: a buffer from malloc is only 16-byte aligned); the backward maps blocks of
// rows in explicit 8-wide vectors with a scalar twin for the last cols % 8 columns.
#include <cstring>

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

// The rows' hi, lo and k in double, for the partials' xhat.
template <int R, class T>
struct RowCentersInDouble {
  double hi[R], lo[R], k[R];
  BNORM_INLINE explicit RowCentersInDouble(const BackwardCoefficients<T>* c) {
    for (int i = 0; i < R; ++i) {
      hi[i] = static_cast<double>(c[i].hi);
      lo[i] = static_cast<double>(c[i].lo);
      k[i] = static_cast<double>(c[i].k);
    }
  }
};

// The backward map of R consecutive rows (row i at x + i * cols, its map c[i]), one pass
// over their cached x and dy, column by column:
//   dw[j] += dy * xhat, db[j] += dy  in double, rows in order (each column's partial is
//     loaded and stored once per R rows: with a partial per row, its stores bounded the
//     pass);
//   dx[j] = (w[j] * dy) * k + ((x - hi) - lo) * q + r  in T,
// xhat = ((x - hi) - lo) * k (for LayerNorm hi + lo is the row's exact mean and k its
// rstd, for RMSNorm hi = lo = 0). Db implies Dw (the driver then keeps both). `fresh`:
// the partials start from zero here (0.0 + the rows' terms, the bits of a zeroed buffer,
// without writing and reading it: the zeroing was 7% of the backward at (8192, 768)).
// dy[j] is read before dx[j] (which may be dy) is written.
template <int R, bool Dw, bool Db, bool Dx, bool Weight, class T>
BNORM_INLINE void column_backward_values(const T* x, const T* dy, const T* w, T* dx,
                                         int64_t cols, int64_t begin, int64_t end,
                                         const BackwardCoefficients<T>* c, double* dw,
                                         double* db, bool fresh) {
  const RowCentersInDouble<R, T> m(c);
  for (int64_t j = begin; j < end; ++j) {
    double aw = 0, ab = 0;
    if constexpr (Dw) aw = fresh ? 0.0 : dw[j];
    if constexpr (Db) ab = fresh ? 0.0 : db[j];
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) {
      const T d = dy[i * cols + j], xv = x[i * cols + j];
      if constexpr (Dw)
        aw += static_cast<double>(d) * (((static_cast<double>(xv) - m.hi[i]) - m.lo[i]) * m.k[i]);
      if constexpr (Db) ab += static_cast<double>(d);
      if constexpr (Dx) {
        T g = d;
        if constexpr (Weight) g = w[j] * g;
        dx[i * cols + j] = g * c[i].k + ((xv - c[i].hi) - c[i].lo) * c[i].q + c[i].r;
      }
    }
    if constexpr (Dw) dw[j] = aw;
    if constexpr (Db) db[j] = ab;
  }
}

// The same map, 8 columns at a time in explicit vectors (the vectorizer gives up on R
// rows of pointers that may alias), [begin, end) a multiple of 8 long. Each value sees
// the same operations in the same order as in column_backward_values: the same bits.
template <int R, bool Dw, bool Db, bool Dx, bool Weight, class T>
BNORM_INLINE void column_backward_vectors(const T* x, const T* dy, const T* w, T* dx,
                                          int64_t cols, int64_t begin, int64_t end,
                                          const BackwardCoefficients<T>* c, double* dw,
                                          double* db, bool fresh) {
  const RowCentersInDouble<R, T> m(c);
  for (int64_t j = begin; j < end; j += 8) {
    Double8 aw{}, ab{};
    if constexpr (Dw) if (!fresh) load8(dw + j, aw);
    if constexpr (Db) if (!fresh) load8(db + j, ab);
    Vec8<T> wv{};
    if constexpr (Dx && Weight) load_vec8(w + j, wv);
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) {
      Vec8<T> d, xv;
      load_vec8(dy + i * cols + j, d);
      load_vec8(x + i * cols + j, xv);
      if constexpr (Dw || Db) {
        Double8 dd;
        load8(dy + i * cols + j, dd);
        if constexpr (Dw) {
          Double8 xd;
          load8(x + i * cols + j, xd);
          aw += dd * (((xd - m.hi[i]) - m.lo[i]) * m.k[i]);
        }
        if constexpr (Db) ab += dd;
      }
      if constexpr (Dx) {
        Vec8<T> g = d;
        if constexpr (Weight) g = wv * g;
        store_vec8(dx + i * cols + j, g * c[i].k + ((xv - c[i].hi) - c[i].lo) * c[i].q + c[i].r);
      }
    }
    if constexpr (Dw) std::memcpy(dw + j, &aw, sizeof aw);
    if constexpr (Db) std::memcpy(db + j, &ab, sizeof ab);
  }
}

template <int R, bool Dw, bool Db, bool Dx, bool Weight, class T>
BNORM_INLINE void column_backward_kernel(const T* x, const T* dy, const T* w, T* dx,
                                         int64_t cols, const BackwardCoefficients<T>* c,
                                         double* dw, double* db, bool fresh) {
  // No scalar head to align the stores (as the single-row maps have): R rows of any
  // length are not aligned alike, and a head of up to 15 values in scalar code cost more
  // (13% of the pass at (8192, 768)) than the split stores it avoids.
  const int64_t body_end = cols / 8 * 8;
  column_backward_vectors<R, Dw, Db, Dx, Weight>(x, dy, w, dx, cols, 0, body_end, c, dw, db, fresh);
  column_backward_values<R, Dw, Db, Dx, Weight>(x, dy, w, dx, cols, body_end, cols, c, dw, db,
                                                fresh);
}

template <int R, bool Dw, bool Db, class T>
BNORM_INLINE void column_backward_dx(const T* x, const T* dy, const T* w, T* dx, int64_t cols,
                                     const BackwardCoefficients<T>* c, double* dw, double* db,
                                     bool fresh) {
  if (!dx) column_backward_kernel<R, Dw, Db, false, false>(x, dy, w, dx, cols, c, dw, db, fresh);
  else if (w) column_backward_kernel<R, Dw, Db, true, true>(x, dy, w, dx, cols, c, dw, db, fresh);
  else column_backward_kernel<R, Dw, Db, true, false>(x, dy, w, dx, cols, c, dw, db, fresh);
}

template <int R, class T>
BNORM_INLINE void column_backward_block(const T* x, const T* dy, const T* w, T* dx,
                                        int64_t cols, const BackwardCoefficients<T>* c,
                                        double* dw, double* db, bool fresh) {
  if (db) column_backward_dx<R, true, true>(x, dy, w, dx, cols, c, dw, db, fresh);
  else if (dw) column_backward_dx<R, true, false>(x, dy, w, dx, cols, c, dw, db, fresh);
  else if (dx) column_backward_dx<R, false, false>(x, dy, w, dx, cols, c, dw, db, fresh);
}

template <class T>
BNORM_INLINE void column_backward_affine_rows_impl(const T* x, const T* dy, const T* w, T* dx,
                                                   int64_t rows, int64_t cols,
                                                   const BackwardCoefficients<T>* c,
                                                   double* dw, double* db, bool fresh) {
  if (rows == kRowBlock) {
    column_backward_block<kRowBlock>(x, dy, w, dx, cols, c, dw, db, fresh);
    return;
  }
  for (int64_t i = 0; i < rows; ++i)
    column_backward_block<1>(x + i * cols, dy + i * cols, w, dx ? dx + i * cols : nullptr, cols,
                             c + i, dw, db, fresh && i == 0);
}

}  // namespace

#define BNORM_DEFINE_COLUMN_MAPS(T)                                                        \
  BNORM_CLONES void column_affine_row(const T* x, T* y, int64_t cols, RowCoefficients<T> c, \
                                      const T* w, const T* b) {                           \
    column_affine_row_impl(x, y, cols, c, w, b);                                           \
  }                                                                                        \
  BNORM_CLONES void column_backward_affine_rows(const T* x, const T* dy, const T* w, T* dx, \
                                                int64_t rows, int64_t cols,                  \
                                                const BackwardCoefficients<T>* c, double* dw, \
                                                double* db, bool fresh) {                    \
    column_backward_affine_rows_impl(x, dy, w, dx, rows, cols, c, dw, db, fresh);            \
  }

BNORM_DEFINE_COLUMN_MAPS(float)
BNORM_DEFINE_COLUMN_MAPS(double)
#undef BNORM_DEFINE_COLUMN_MAPS

}  // namespace bnorm::kernels
