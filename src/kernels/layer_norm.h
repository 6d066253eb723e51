// The row-wise normalizations' kernel driver: LayerNorm and RMSNorm over x viewed as
// (rows, cols), row-major, x[r * cols + j]; weight, bias, dweight, dbias (cols). Sizes
// are validated by the front-end (src/norm/layer_norm.h); kernels only assert.
//
// Fused: each row is reduced and then mapped while it is still in L1/L2 (a row of 768
// floats is 3 KB), so the forward moves 2T (read x, write y) and the backward 3T (read
// x and dy, write dx), T = one tensor's bytes. Rows go to threads whole; dweight and
// dbias are column sums over rows, kept as per-chunk partials in double (row chunks
// fixed by the shape) and folded in chunk order, so every result is bitwise the same for
// any thread count.
//
// RMSNorm is the same walk: its front-end's callbacks return center 0 (hi = lo = 0).
#pragma once

#include <cstdint>

#include "kernels/affine.h"
#include "kernels/moments.h"
#include "kernels/row_maps.h"

namespace bnorm::kernels {

// The extension point between a row's reduction and its elementwise pass, called once
// per row on the thread that owns the row (so it may write per-row outputs: save_mean,
// save_rstd). LayerNorm returns {mean_hi, mean_lo, rstd}, RMSNorm {0, 0, rstd}.
template <class T>
struct RowStatisticsFn {
  void* context;
  RowCoefficients<T> (*call)(void* context, int64_t row, const Moments& moments);
};

// The backward's: from a row's sums (weighted_backward_sums_row, or zeros when the
// driver was told not to compute them) to its dx map {hi, lo, k, q, r}, which also gives
// xhat = ((x - hi) - lo) * k for dweight.
template <class T>
struct RowSumsFn {
  void* context;
  BackwardCoefficients<T> (*call)(void* context, int64_t row, const BackwardSums& sums);
};

// Per row: moments of x (moments.h, shifted by the row's first value; rows longer than
// kChunk in chunks merged in order), then y = (((x - hi) - lo) * scale) * w[j] + b[j]
// with the row's values from `statistics`. weight, bias may be null; y may equal x.
template <class T>
void layer_norm_forward(int64_t rows, int64_t cols, const T* x, T* y, const T* weight,
                        const T* bias, const RowStatisticsFn<T>& statistics, int threads);

// Per row: when `row_sums`, the sums of weighted_backward_sums_row with xc = x - center[r]
// (center null: 0); the row's map from `coefficients`; then the column partials of
// dweight = sum_r dy * xhat and dbias = sum_r dy (each when not null) and
// dx = (w[j] * dy) * k + ((x - hi) - lo) * q + r (when dx is not null). dx may equal dy.
template <class T>
void layer_norm_backward(int64_t rows, int64_t cols, const T* x, const T* dy, T* dx,
                         const T* weight, const T* center, bool row_sums,
                         const RowSumsFn<T>& coefficients, T* dweight, T* dbias, int threads);

}  // namespace bnorm::kernels
