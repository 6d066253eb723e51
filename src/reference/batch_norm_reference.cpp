#include "reference/batch_norm_reference.h"

#include <cmath>
#include <vector>

namespace bnorm::reference {

void batch_moments(const Geometry& g, const double* x, double* mean, double* var) {
  for (int64_t ch = 0; ch < g.c; ++ch) {
    long double sum = 0;
    for (int64_t i = 0; i < g.n; ++i)
      for (int64_t s = 0; s < g.spatial; ++s) sum += x[g.index(i, ch, s)];
    const long double mu = sum / g.per_channel();
    long double squares = 0;
    for (int64_t i = 0; i < g.n; ++i)
      for (int64_t s = 0; s < g.spatial; ++s) {
        const long double d = x[g.index(i, ch, s)] - mu;
        squares += d * d;
      }
    mean[ch] = static_cast<double>(mu);
    var[ch] = static_cast<double>(squares / g.per_channel());
  }
}

namespace {

// Batch statistics' 1 / sqrt(var + eps), but 0 when var == 0 and eps == 0 (PyTorch's
// InvStd): a constant channel then gives y = bias and dx = 0, not NaN.
template <class F>
F batch_invstd(F var, double eps) {
  return var == 0 && eps == 0 ? F(0) : F(1) / std::sqrt(var + eps);
}

// y = weight * (x - center) * invstd + bias, per channel.
void normalize(const Geometry& g, const double* x, double* y, const double* weight,
               const double* bias, const double* center, const double* invstd) {
  for (int64_t ch = 0; ch < g.c; ++ch) {
    const double w = weight ? weight[ch] : 1.0;
    const double b = bias ? bias[ch] : 0.0;
    for (int64_t i = 0; i < g.n; ++i)
      for (int64_t s = 0; s < g.spatial; ++s) {
        const int64_t k = g.index(i, ch, s);
        y[k] = static_cast<double>(w * ((static_cast<long double>(x[k]) - center[ch]) * invstd[ch]) + b);
      }
  }
}

}  // namespace

void batch_norm_forward_training(const Geometry& g, const double* x, double* y,
                                 const double* weight, const double* bias, double eps,
                                 double* mean, double* var) {
  batch_moments(g, x, mean, var);
  std::vector<double> invstd(static_cast<size_t>(g.c));
  for (int64_t ch = 0; ch < g.c; ++ch) invstd[ch] = batch_invstd(var[ch], eps);
  normalize(g, x, y, weight, bias, mean, invstd.data());
}

void batch_norm_forward_inference(const Geometry& g, const double* x, double* y,
                                  const double* weight, const double* bias,
                                  const double* running_mean, const double* running_var,
                                  double eps) {
  std::vector<double> invstd(static_cast<size_t>(g.c));
  for (int64_t ch = 0; ch < g.c; ++ch) invstd[ch] = 1.0 / std::sqrt(running_var[ch] + eps);
  normalize(g, x, y, weight, bias, running_mean, invstd.data());
}

void batch_norm_backward(const Geometry& g, const double* x, const double* dy,
                         const double* weight, double eps, double* dx, double* dweight,
                         double* dbias) {
  const auto m = static_cast<long double>(g.per_channel());
  for (int64_t ch = 0; ch < g.c; ++ch) {
    long double sum = 0;
    for (int64_t i = 0; i < g.n; ++i)
      for (int64_t s = 0; s < g.spatial; ++s) sum += x[g.index(i, ch, s)];
    const long double mean = sum / m;
    long double squares = 0;
    for (int64_t i = 0; i < g.n; ++i)
      for (int64_t s = 0; s < g.spatial; ++s) {
        const long double d = x[g.index(i, ch, s)] - mean;
        squares += d * d;
      }
    const long double invstd = batch_invstd(squares / m, eps);
    long double sum_dy = 0, sum_dy_xhat = 0;
    for (int64_t i = 0; i < g.n; ++i)
      for (int64_t s = 0; s < g.spatial; ++s) {
        const int64_t k = g.index(i, ch, s);
        sum_dy += dy[k];
        sum_dy_xhat += dy[k] * (x[k] - mean) * invstd;
      }
    const long double w = weight ? weight[ch] : 1.0;
    if (dx)
      for (int64_t i = 0; i < g.n; ++i)
        for (int64_t s = 0; s < g.spatial; ++s) {
          const int64_t k = g.index(i, ch, s);
          const long double xhat = (x[k] - mean) * invstd;
          dx[k] = static_cast<double>(w * invstd / m * (m * dy[k] - sum_dy - xhat * sum_dy_xhat));
        }
    if (dweight) dweight[ch] = static_cast<double>(sum_dy_xhat);
    if (dbias) dbias[ch] = static_cast<double>(sum_dy);
  }
}

void batch_norm_backward_inference(const Geometry& g, const double* x, const double* dy,
                                   const double* weight, const double* running_mean,
                                   const double* running_var, double eps, double* dx,
                                   double* dweight, double* dbias) {
  for (int64_t ch = 0; ch < g.c; ++ch) {
    const long double invstd = 1.0L / std::sqrt(static_cast<long double>(running_var[ch]) + eps);
    const long double w = weight ? weight[ch] : 1.0;
    long double sum_dy = 0, sum_dy_xhat = 0;
    for (int64_t i = 0; i < g.n; ++i)
      for (int64_t s = 0; s < g.spatial; ++s) {
        const int64_t k = g.index(i, ch, s);
        sum_dy += dy[k];
        if (x) sum_dy_xhat += dy[k] * (x[k] - static_cast<long double>(running_mean[ch])) * invstd;
        if (dx) dx[k] = static_cast<double>(dy[k] * w * invstd);
      }
    if (dweight) dweight[ch] = static_cast<double>(sum_dy_xhat);
    if (dbias) dbias[ch] = static_cast<double>(sum_dy);
  }
}

void update_running_stats(int64_t c, int64_t m, const double* mean, const double* var,
                          double factor, bool unbiased, double* running_mean,
                          double* running_var) {
  for (int64_t ch = 0; ch < c; ++ch) {
    const double count = static_cast<double>(m);
    const double batch_var = unbiased ? var[ch] * count / (count - 1) : var[ch];
    if (running_mean) running_mean[ch] = (1 - factor) * running_mean[ch] + factor * mean[ch];
    if (running_var) running_var[ch] = (1 - factor) * running_var[ch] + factor * batch_var;
  }
}

}  // namespace bnorm::reference
