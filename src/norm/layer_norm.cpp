// LayerNorm's and RMSNorm's front-end (layer_norm.h): validation, then the kernels with
// per-row callbacks that turn moments or sums into each row's coefficients in double.
#include "norm/layer_norm.h"

#include <cmath>
#include <limits>
#include <string>

#include "kernels/layer_norm.h"
#include "norm/batch_norm.h"
#include "norm/overlap.h"
#include "norm/threads.h"
#include "norm/validation.h"

namespace bnorm::norm {
namespace {

using kernels::BackwardCoefficients;
using kernels::BackwardSums;
using kernels::Moments;
using kernels::RowCoefficients;

// rows, cols >= 1 and rows * cols within int64_t; returns rows * cols.
int64_t check_shape(const char* op, int64_t rows, int64_t cols) {
  if (rows < 1)
    fail(BNORM_ERROR_INVALID_SHAPE, op, "rows must be >= 1 (no zero-size dims), got " + str(rows));
  if (cols < 1)
    fail(BNORM_ERROR_INVALID_SHAPE, op,
         "cols (the product of normalized_shape) must be >= 1, got " + str(cols));
  return checked_product(op, "rows * cols", {rows, cols});
}

// ---- forward callbacks -----------------------------------------------------------

// LayerNorm, per row: mean = hi + lo split in two values of T (x - hi is exact near the
// mean: no digit of x - mean lost to a large mean), rstd = 1 / sqrt(M2 / n + eps);
// save_mean = hi (the mean rounded to T), save_rstd = rstd rounded to T.
template <class T>
struct LayerNormStatistics {
  double eps;
  T *save_mean, *save_rstd;

  static RowCoefficients<T> call(void* context, int64_t row, const Moments& m) {
    const auto& self = *static_cast<const LayerNormStatistics*>(context);
    const double rstd = 1.0 / std::sqrt(m.biased_variance() + self.eps);
    const T hi = static_cast<T>(m.mean);
    const T lo = static_cast<T>(m.mean - static_cast<double>(hi));
    if (self.save_mean) self.save_mean[row] = hi;
    if (self.save_rstd) self.save_rstd[row] = static_cast<T>(rstd);
    return {hi, lo, static_cast<T>(rstd)};
  }
};

// RMSNorm, per row: mean(x^2) = M2 / n + mean^2 from the shared walk's moments, two
// non-negative terms (no cancellation), so RMSNorm needs no reduction of its own. A row
// with |mean| = Inf has mean(x^2) = Inf and rstd 0, as PyTorch's rsqrt(sum(x^2) / n + eps)
// gives; NaN stays NaN (so does a row holding both +Inf and -Inf, where PyTorch's rstd
// is 0). Center 0: hi = lo = 0.
template <class T>
struct RmsNormStatistics {
  double eps;
  T* save_rstd;

  static RowCoefficients<T> call(void* context, int64_t row, const Moments& m) {
    const auto& self = *static_cast<const RmsNormStatistics*>(context);
    const double mean_square = std::isinf(m.mean) ? std::numeric_limits<double>::infinity()
                                                  : m.m2 / m.count + m.mean * m.mean;
    const double rstd = 1.0 / std::sqrt(mean_square + self.eps);
    if (self.save_rstd) self.save_rstd[row] = static_cast<T>(rstd);
    return {T(0), T(0), static_cast<T>(rstd)};
  }
};

// ---- backward callbacks ----------------------------------------------------------

// LayerNorm's dx map from one row's sums. With n = cols, m = save_mean (the mean rounded
// to T), g = weight[j] * dy, xc = x - m, and the sums A = sum(g), B = sum(g * xc),
// C = sum(xc) in double:
//   the exact mean is m + delta, delta = C / n, so xhat = (xc - delta) * rstd;
//   dx = rstd * (g - A / n - xhat * mean(g * xhat)),
//   mean(g * xhat) = rstd * sum(g * (xc - delta)) / n = rstd * (B - delta * A) / n,
//   rstd * xhat * mean(g * xhat) = (xc - delta) * rstd^3 * (B - delta * A) / n,
// hence
//   dx = g * rstd + (xc - delta) * q + r,  q = -rstd^3 * (B - delta * A) / n,
//                                           r = -rstd * A / n,
// the kernel's map with hi = m, lo = delta, k = rstd (and xhat = ((x - hi) - lo) * k for
// dweight). rstd is the saved one, as ATen's backward takes it.
template <class T>
struct LayerNormSums {
  double n;
  const T *save_mean, *save_rstd;

  static BackwardCoefficients<T> call(void* context, int64_t row, const BackwardSums& s) {
    const auto& self = *static_cast<const LayerNormSums*>(context);
    const double rstd = static_cast<double>(self.save_rstd[row]);
    const double delta = s.xc_sum / self.n;
    const double q = -(rstd * rstd * rstd) * ((s.dy_xc_sum - delta * s.dy_sum) / self.n);
    const double r = -rstd * (s.dy_sum / self.n);
    return {self.save_mean[row], static_cast<T>(delta), self.save_rstd[row], static_cast<T>(q),
            static_cast<T>(r)};
  }
};

// RMSNorm's: with xhat = x * rstd and S = sum(g * x) (the sums' dy_xc_sum at center 0),
//   dx = rstd * (g - xhat * mean(g * xhat)) = g * rstd - x * rstd^3 * S / n,
// the kernel's map with hi = lo = 0, k = rstd, q = -rstd^3 * S / n, r = 0.
template <class T>
struct RmsNormSums {
  double n;
  const T* save_rstd;

  static BackwardCoefficients<T> call(void* context, int64_t row, const BackwardSums& s) {
    const auto& self = *static_cast<const RmsNormSums*>(context);
    const double rstd = static_cast<double>(self.save_rstd[row]);
    const double q = -(rstd * rstd * rstd) * (s.dy_xc_sum / self.n);
    return {T(0), T(0), self.save_rstd[row], static_cast<T>(q), T(0)};
  }
};

}  // namespace

template <class T>
void layer_norm_forward(const char* op, int64_t rows, int64_t cols, const T* x, T* y,
                        const T* weight, const T* bias, double eps, T* save_mean,
                        T* save_rstd) {
  const int64_t count = check_shape(op, rows, cols);
  require(x, op, "x");
  require(y, op, "y");
  check_positive_eps(op, eps);
  check_no_overlap(op,
                   {buffer_of("x", x, count, false), buffer_of("y", y, count, true),
                    buffer_of("weight", weight, cols, false), buffer_of("bias", bias, cols, false),
                    buffer_of("save_mean", save_mean, rows, true),
                    buffer_of("save_rstd", save_rstd, rows, true)},
                   "y", "x");
  LayerNormStatistics<T> statistics{eps, save_mean, save_rstd};
  kernels::layer_norm_forward(rows, cols, x, y, weight, bias,
                              kernels::RowStatisticsFn<T>{&statistics, &LayerNormStatistics<T>::call},
                              num_threads());
}

template <class T>
void layer_norm_backward(const char* op, int64_t rows, int64_t cols, const T* x, const T* dy,
                         T* dx, const T* weight, const T* save_mean, const T* save_rstd,
                         T* dweight, T* dbias) {
  const int64_t count = check_shape(op, rows, cols);
  require(x, op, "x");
  require(dy, op, "dy");
  require(save_mean, op, "save_mean");
  require(save_rstd, op, "save_rstd");
  check_no_overlap(op,
                   {buffer_of("x", x, count, false), buffer_of("dy", dy, count, false),
                    buffer_of("dx", dx, count, true), buffer_of("weight", weight, cols, false),
                    buffer_of("save_mean", save_mean, rows, false),
                    buffer_of("save_rstd", save_rstd, rows, false),
                    buffer_of("dweight", dweight, cols, true),
                    buffer_of("dbias", dbias, cols, true)},
                   "dx", "dy");
  if (!dx && !dweight && !dbias) return;
  LayerNormSums<T> sums{static_cast<double>(cols), save_mean, save_rstd};
  // dx needs every sum; dweight needs C (the exact mean); dbias none.
  kernels::layer_norm_backward(rows, cols, x, dy, dx, weight, save_mean,
                               dx != nullptr || dweight != nullptr,
                               kernels::RowSumsFn<T>{&sums, &LayerNormSums<T>::call}, dweight,
                               dbias, num_threads());
}

template <class T>
void rms_norm_forward(const char* op, int64_t rows, int64_t cols, const T* x, T* y,
                      const T* weight, double eps, T* save_rstd) {
  const int64_t count = check_shape(op, rows, cols);
  require(x, op, "x");
  require(y, op, "y");
  check_positive_eps(op, eps);
  check_no_overlap(op,
                   {buffer_of("x", x, count, false), buffer_of("y", y, count, true),
                    buffer_of("weight", weight, cols, false),
                    buffer_of("save_rstd", save_rstd, rows, true)},
                   "y", "x");
  RmsNormStatistics<T> statistics{eps, save_rstd};
  kernels::layer_norm_forward(rows, cols, x, y, weight, static_cast<const T*>(nullptr),
                              kernels::RowStatisticsFn<T>{&statistics, &RmsNormStatistics<T>::call},
                              num_threads());
}

template <class T>
void rms_norm_backward(const char* op, int64_t rows, int64_t cols, const T* x, const T* dy,
                       T* dx, const T* weight, const T* save_rstd, T* dweight) {
  const int64_t count = check_shape(op, rows, cols);
  require(x, op, "x");
  require(dy, op, "dy");
  require(save_rstd, op, "save_rstd");
  check_no_overlap(op,
                   {buffer_of("x", x, count, false), buffer_of("dy", dy, count, false),
                    buffer_of("dx", dx, count, true), buffer_of("weight", weight, cols, false),
                    buffer_of("save_rstd", save_rstd, rows, false),
                    buffer_of("dweight", dweight, cols, true)},
                   "dx", "dy");
  if (!dx && !dweight) return;
  RmsNormSums<T> sums{static_cast<double>(cols), save_rstd};
  // Only dx needs the sums (S); dweight's xhat = x * rstd needs none.
  kernels::layer_norm_backward(rows, cols, x, dy, dx, weight, static_cast<const T*>(nullptr),
                               dx != nullptr,
                               kernels::RowSumsFn<T>{&sums, &RmsNormSums<T>::call}, dweight,
                               static_cast<T*>(nullptr), num_threads());
}

#define BNORM_INSTANTIATE(T)                                                                \
  template void layer_norm_forward<T>(const char*, int64_t, int64_t, const T*, T*, const T*, \
                                      const T*, double, T*, T*);                            \
  template void layer_norm_backward<T>(const char*, int64_t, int64_t, const T*, const T*,   \
                                       T*, const T*, const T*, const T*, T*, T*);           \
  template void rms_norm_forward<T>(const char*, int64_t, int64_t, const T*, T*, const T*,  \
                                    double, T*);                                            \
  template void rms_norm_backward<T>(const char*, int64_t, int64_t, const T*, const T*, T*, \
                                     const T*, const T*, T*);
BNORM_INSTANTIATE(float)
BNORM_INSTANTIATE(double)
#undef BNORM_INSTANTIATE

}  // namespace bnorm::norm
