// The scalar oracles for the two row-wise normalizations, LayerNorm and RMSNorm: both
// view x as (rows, cols), cols = prod(normalized_shape), the trailing dims, and reduce
// each row. Plain loops, sums in long double, a centred second pass for the variance.
// Never optimized; the fast kernels are tested against them (docs/normalizations.md).
//
// Shapes: x, y, dy, dx (rows, cols) row-major, x[r * cols + j]; weight, bias, dweight,
// dbias (cols), one value per element of normalized_shape; mean, rstd (rows).
// T is float or double; both are instantiated. Every output is the long-double result
// rounded once to T. eps is used as given (ATen rounds it to T first: for float and
// eps = 1e-5 that moves rstd by about 1.3e-8 * eps / (var + eps) relative, below float's ulp).
//
// Optional pointers: weight == nullptr means 1, bias == nullptr means 0 (PyTorch's
// elementwise_affine=False, bias=False); mean, rstd, dx, dweight, dbias == nullptr are
// not written. The backwards recompute the statistics from x (the kernels take the
// saved ones), so they are the exact gradient of the forward.
#pragma once

#include <cstdint>
#include <limits>

namespace bnorm::reference {

// ---- LayerNorm (torch.nn.functional.layer_norm) --------------------------------------
// Per row r: mean = sum_j x / cols, var = sum_j (x - mean)^2 / cols (biased),
//   rstd = 1 / sqrt(var + eps), xhat = (x - mean) * rstd, y = xhat * weight[j] + bias[j].
// ATen saves mean and rstd per row; so does this (when the pointers are given).
template <class T>
void layer_norm_forward(int64_t rows, int64_t cols, const T* x, T* y, const T* weight,
                        const T* bias, double eps, T* mean, T* rstd);

// Per row, with g = dy * weight[j] (dy when weight is nullptr):
//   dx = rstd * (g - mean_j(g) - xhat * mean_j(g * xhat)),
// and per column, summed over rows: dweight[j] = sum_r dy * xhat, dbias[j] = sum_r dy.
template <class T>
void layer_norm_backward(int64_t rows, int64_t cols, const T* x, const T* dy, const T* weight,
                         double eps, T* dx, T* dweight, T* dbias);

// ---- RMSNorm (torch.nn.RMSNorm, PyTorch 2.4) ----------------------------------------
// Per row: rstd = 1 / sqrt(sum_j x^2 / cols + eps), y = x * rstd * weight[j].
// No mean subtraction, no bias. rstd (rows) is saved when given.
template <class T>
void rms_norm_forward(int64_t rows, int64_t cols, const T* x, T* y, const T* weight,
                      double eps, T* rstd);

// Per row, with g = dy * weight[j] and xhat = x * rstd:
//   dx = rstd * (g - xhat * mean_j(g * xhat)),  dweight[j] = sum_r dy * xhat.
template <class T>
void rms_norm_backward(int64_t rows, int64_t cols, const T* x, const T* dy, const T* weight,
                       double eps, T* dx, T* dweight);

// PyTorch's eps=None for RMSNorm: torch.finfo(dtype).eps, the machine epsilon of T
// (2^-23 for float, 2^-52 for double). The reference itself always takes a number; a
// front-end maps None to this.
template <class T>
constexpr double rms_norm_default_eps() {
  return static_cast<double>(std::numeric_limits<T>::epsilon());
}

}  // namespace bnorm::reference
