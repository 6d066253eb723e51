// The row-wise normalizations' microkernels (LayerNorm, RMSNorm): one row of `cols`
// contiguous values with a weight (and bias) per column, compiled once per instruction
// set (simd.h). The row statistics themselves come from reduce.h's moments_chunk.
//
// Names follow stage_walk (docs/kernels.md):
//   stage  column_affine           y = (((x - hi) - lo) * scale) * w[j] + b[j]
//          weighted_backward_sums  sum(g), sum(g * xc), sum(xc); g = w[j] * dy, xc = x - center
//          column_backward_affine  dx = (w[j] * dy) * k + ((x - hi) - lo) * q + r, and the
//                                  column partials dw[j] += dy * xhat, db[j] += dy
//   walk   row    one row of a row-wise norm: cols contiguous values, column j's weight w[j]
//          rows   up to kRowBlock consecutive rows, column by column
// Shapes: x, y, dy, dx (cols) (one row); w, b, dw, db (cols). w == nullptr means 1,
// b == nullptr means 0.
//
// Float precision at large means: the row's mean is split into two values of T,
// mean = hi + lo; x - hi is exact (Sterbenz) for x near the mean, so no digit of
// x - mean is lost to the mean's magnitude (affine.h, the same note).
// RMSNorm runs the same maps with hi = lo = 0 (x - 0 - 0 is x, exactly).
#pragma once

#include <cstdint>

#include "kernels/affine.h"
#include "kernels/moments.h"
#include "kernels/policy.h"

namespace bnorm::kernels {

// One row's forward map: y = (((x - hi) - lo) * scale) * w[j] + b[j].
template <class T>
struct RowCoefficients {
  T hi, lo, scale;
};

#define BNORM_DECLARE_ROW_MAPS(T)                                                          \
  /* y[j] = (((x[j] - c.hi) - c.lo) * c.scale) * w[j] + b[j] for j < cols; y may equal    \
     x. */                                                                               \
  void column_affine_row(const T* x, T* y, int64_t cols, RowCoefficients<T> c, const T* w, \
                         const T* b);                                                     \
  /* With g = w[j] * dy[j] (rounded to T, as column_backward_affine_row uses it) and     \
     xc = x[j] - center (in double): {sum(g), sum(g * xc), sum(xc)}, in 16 lanes          \
     (BackwardLanes), so the bits depend on cols only. next_x, next_dy: the row read     \
     after this one, prefetched (nullptr: none). */                                       \
  BackwardSums weighted_backward_sums_row(const T* x, const T* dy, const T* w,             \
                                          int64_t cols, double center, const T* next_x,    \
                                          const T* next_dy);                               \
  /* Rows x + i * cols (i < rows <= kRowBlock) with maps c[i], in one pass: the column  \
     partials in double with xhat = ((x - hi) - lo) * k, rows in order, dw[j] += dy *    \
     xhat and db[j] += dy (db not null needs dw not null; each null: not computed); and, \
     when dx is not null, dx[j] = (w[j] * dy[j]) * k + ((x[j] - hi) - lo) * q + r in T.  \
     dx may equal dy. fresh: dw and db start from zero (their contents are not read). */ \
  void column_backward_affine_rows(const T* x, const T* dy, const T* w, T* dx, int64_t rows, \
                                   int64_t cols, const BackwardCoefficients<T>* c,          \
                                   double* dw, double* db, bool fresh);

BNORM_DECLARE_ROW_MAPS(float)
BNORM_DECLARE_ROW_MAPS(double)
#undef BNORM_DECLARE_ROW_MAPS

}  // namespace bnorm::kernels
