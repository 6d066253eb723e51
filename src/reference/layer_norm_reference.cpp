#include "reference/layer_norm_reference.h"

#include <cmath>
#include <vector>

namespace bnorm::reference {

namespace {

using Acc = long double;

// Row r's mean and biased variance, a centred second pass in long double.
template <class T>
void row_moments(const T* row, int64_t cols, Acc& mean, Acc& var) {
  Acc sum = 0;
  for (int64_t j = 0; j < cols; ++j) sum += row[j];
  mean = sum / cols;
  Acc squares = 0;
  for (int64_t j = 0; j < cols; ++j) {
    const Acc d = row[j] - mean;
    squares += d * d;
  }
  var = squares / cols;
}

// Row r's mean of squares, sum x^2 / cols.
template <class T>
Acc row_mean_square(const T* row, int64_t cols) {
  Acc squares = 0;
  for (int64_t j = 0; j < cols; ++j) squares += static_cast<Acc>(row[j]) * row[j];
  return squares / cols;
}

template <class T>
Acc at_or(const T* v, int64_t j, Acc fallback) {
  return v ? static_cast<Acc>(v[j]) : fallback;
}

}  // namespace

template <class T>
void layer_norm_forward(int64_t rows, int64_t cols, const T* x, T* y, const T* weight,
                        const T* bias, double eps, T* mean, T* rstd) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    Acc mu = 0, var = 0;
    row_moments(xr, cols, mu, var);
    const Acc inv = 1 / std::sqrt(var + eps);
    for (int64_t j = 0; j < cols; ++j) {
      const Acc xhat = (xr[j] - mu) * inv;
      y[r * cols + j] = static_cast<T>(xhat * at_or(weight, j, 1) + at_or(bias, j, 0));
    }
    if (mean) mean[r] = static_cast<T>(mu);
    if (rstd) rstd[r] = static_cast<T>(inv);
  }
}

template <class T>
void layer_norm_backward(int64_t rows, int64_t cols, const T* x, const T* dy, const T* weight,
                         double eps, T* dx, T* dweight, T* dbias) {
  // dweight and dbias sum over rows: accumulate all rows, round once at the end.
  std::vector<Acc> sum_dy_xhat(dweight ? cols : 0), sum_dy(dbias ? cols : 0);
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    const T* dyr = dy + r * cols;
    Acc mu = 0, var = 0;
    row_moments(xr, cols, mu, var);
    const Acc inv = 1 / std::sqrt(var + eps);
    Acc sum_g = 0, sum_g_xhat = 0;
    for (int64_t j = 0; j < cols; ++j) {
      const Acc xhat = (xr[j] - mu) * inv;
      const Acc g = dyr[j] * at_or(weight, j, 1);
      sum_g += g;
      sum_g_xhat += g * xhat;
      if (dweight) sum_dy_xhat[j] += dyr[j] * xhat;
      if (dbias) sum_dy[j] += dyr[j];
    }
    if (dx)
      for (int64_t j = 0; j < cols; ++j) {
        const Acc xhat = (xr[j] - mu) * inv;
        const Acc g = dyr[j] * at_or(weight, j, 1);
        dx[r * cols + j] = static_cast<T>(inv * (g - sum_g / cols - xhat * (sum_g_xhat / cols)));
      }
  }
  for (int64_t j = 0; j < cols; ++j) {
    if (dweight) dweight[j] = static_cast<T>(sum_dy_xhat[j]);
    if (dbias) dbias[j] = static_cast<T>(sum_dy[j]);
  }
}

template <class T>
void rms_norm_forward(int64_t rows, int64_t cols, const T* x, T* y, const T* weight,
                      double eps, T* rstd) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    const Acc inv = 1 / std::sqrt(row_mean_square(xr, cols) + eps);
    for (int64_t j = 0; j < cols; ++j)
      y[r * cols + j] = static_cast<T>(xr[j] * inv * at_or(weight, j, 1));
    if (rstd) rstd[r] = static_cast<T>(inv);
  }
}

template <class T>
void rms_norm_backward(int64_t rows, int64_t cols, const T* x, const T* dy, const T* weight,
                       double eps, T* dx, T* dweight) {
  std::vector<Acc> sum_dy_xhat(dweight ? cols : 0);
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    const T* dyr = dy + r * cols;
    const Acc inv = 1 / std::sqrt(row_mean_square(xr, cols) + eps);
    // d rstd / d x_k = -rstd^3 * x_k / cols, hence the single mean(g * xhat) term.
    Acc sum_g_xhat = 0;
    for (int64_t j = 0; j < cols; ++j) {
      const Acc xhat = xr[j] * inv;
      sum_g_xhat += dyr[j] * at_or(weight, j, 1) * xhat;
      if (dweight) sum_dy_xhat[j] += dyr[j] * xhat;
    }
    if (dx)
      for (int64_t j = 0; j < cols; ++j) {
        const Acc xhat = xr[j] * inv;
        const Acc g = dyr[j] * at_or(weight, j, 1);
        dx[r * cols + j] = static_cast<T>(inv * (g - xhat * (sum_g_xhat / cols)));
      }
  }
  if (dweight)
    for (int64_t j = 0; j < cols; ++j) dweight[j] = static_cast<T>(sum_dy_xhat[j]);
}

#define BNORM_INSTANTIATE(T)                                                                   \
  template void layer_norm_forward<T>(int64_t, int64_t, const T*, T*, const T*, const T*,      \
                                      double, T*, T*);                                         \
  template void layer_norm_backward<T>(int64_t, int64_t, const T*, const T*, const T*, double, \
                                       T*, T*, T*);                                            \
  template void rms_norm_forward<T>(int64_t, int64_t, const T*, T*, const T*, double, T*);     \
  template void rms_norm_backward<T>(int64_t, int64_t, const T*, const T*, const T*, double,   \
                                     T*, T*);
BNORM_INSTANTIATE(float)
BNORM_INSTANTIATE(double)
#undef BNORM_INSTANTIATE

}  // namespace bnorm::reference
