// The scalar oracle for batch norm: the paper's formulas, written plainly, in double
// with long-double sums and a centred second pass for the variance. Never optimized;
// every fast kernel is tested against it.
//
// Non-finite values follow IEEE arithmetic through these formulas, which is the rule of
// docs/batch_norm.md: a NaN or +-Inf in a channel's x makes its var, invstd and y NaN
// (its mean is sum(x) / m: +-Inf or NaN). Batch statistics with var == 0 and eps == 0
// give invstd 0 (PyTorch's InvStd), not Inf.
#pragma once

#include <cstdint>

namespace bnorm::reference {

struct Geometry {
  int64_t n = 0, c = 0, spatial = 0;
  bool channels_last = false;

  // Offset of value (i, ch, s) for i < n, ch < c, s < spatial.
  int64_t index(int64_t i, int64_t ch, int64_t s) const {
    return channels_last ? (i * spatial + s) * c + ch : (i * c + ch) * spatial + s;
  }
  int64_t size() const { return n * c * spatial; }
  int64_t per_channel() const { return n * spatial; }
};

// Per channel: mean = sum(x) / m, var = sum((x - mean)^2) / m (biased).
void batch_moments(const Geometry& g, const double* x, double* mean, double* var);

// y = weight * (x - mean) / sqrt(var + eps) + bias with the batch mean/var.
// weight/bias nullptr: 1 and 0. mean/var (per channel) receive the batch statistics.
void batch_norm_forward_training(const Geometry& g, const double* x, double* y,
                                 const double* weight, const double* bias, double eps,
                                 double* mean, double* var);

// y = weight * (x - running_mean) / sqrt(running_var + eps) + bias.
void batch_norm_forward_inference(const Geometry& g, const double* x, double* y,
                                  const double* weight, const double* bias,
                                  const double* running_mean, const double* running_var,
                                  double eps);

// Exact gradient of the training forward (batch statistics recomputed from x):
//   xhat = (x - mean) * invstd, dbias = sum(dy), dweight = sum(dy * xhat),
//   dx = weight * invstd / m * (m * dy - dbias - xhat * dweight).
void batch_norm_backward(const Geometry& g, const double* x, const double* dy,
                         const double* weight, double eps, double* dx, double* dweight,
                         double* dbias);

// Gradient of the inference forward (running statistics fixed):
//   dx = dy * weight * invstd, dweight = sum(dy * (x - running_mean) * invstd), dbias = sum(dy).
void batch_norm_backward_inference(const Geometry& g, const double* x, const double* dy,
                                   const double* weight, const double* running_mean,
                                   const double* running_var, double eps, double* dx,
                                   double* dweight, double* dbias);

// running = (1 - factor) * running + factor * batch, with the batch variance scaled by
// m / (m - 1) when unbiased.
void update_running_stats(int64_t c, int64_t m, const double* mean, const double* var,
                          double factor, bool unbiased, double* running_mean,
                          double* running_var);

}  // namespace bnorm::reference
