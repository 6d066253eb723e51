// LayerNorm's and RMSNorm's front-end: validates every argument (throwing bnorm::Error
// with a message that names the argument and what was expected), computes each row's
// coefficients in double between the kernels' reduction and elementwise pass, and runs
// the kernels (kernels/layer_norm.h). Every check happens before the first write, so a
// failing call changes nothing.
//
// Shapes: x, y, dy, dx (rows, cols) row-major, cols = prod(normalized_shape);
// weight, bias, dweight, dbias (cols); save_mean, save_rstd (rows), dtype T as ATen's.
// Optional (nullptr): weight (1), bias (0), save_mean and save_rstd in the forwards (not
// saved), dx, dweight, dbias in the backwards (not computed). In place: y == x, dx == dy;
// any other overlap is BNORM_ERROR_OVERLAP. rows, cols >= 1; eps finite and > 0.
// NaN and Inf propagate: a row holding one gives NaN statistics and outputs (RMSNorm: a
// row whose values' squares sum to +Inf gives rstd 0, as PyTorch's rsqrt does).
//
// `op` prefixes every message with the name the caller knows the operation by.
#pragma once

#include <cstdint>

namespace bnorm::norm {

// Per row: mean, var (biased), rstd = 1 / sqrt(var + eps),
//   y = ((x - mean) * rstd) * weight[j] + bias[j].
template <class T>
void layer_norm_forward(const char* op, int64_t rows, int64_t cols, const T* x, T* y,
                        const T* weight, const T* bias, double eps, T* save_mean, T* save_rstd);

// Per row, g = dy * weight[j], xhat = (x - mean) * rstd from the saved statistics:
//   dx = rstd * (g - mean_j(g) - xhat * mean_j(g * xhat));
// per column: dweight[j] = sum_r dy * xhat, dbias[j] = sum_r dy.
template <class T>
void layer_norm_backward(const char* op, int64_t rows, int64_t cols, const T* x, const T* dy,
                         T* dx, const T* weight, const T* save_mean, const T* save_rstd,
                         T* dweight, T* dbias);

// Per row: rstd = 1 / sqrt(mean_j(x^2) + eps), y = (x * rstd) * weight[j].
template <class T>
void rms_norm_forward(const char* op, int64_t rows, int64_t cols, const T* x, T* y,
                      const T* weight, double eps, T* save_rstd);

// Per row, g = dy * weight[j], xhat = x * rstd:
//   dx = rstd * (g - xhat * mean_j(g * xhat));  dweight[j] = sum_r dy * xhat.
template <class T>
void rms_norm_backward(const char* op, int64_t rows, int64_t cols, const T* x, const T* dy,
                       T* dx, const T* weight, const T* save_rstd, T* dweight);

}  // namespace bnorm::norm
