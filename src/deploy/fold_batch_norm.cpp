#include "deploy/fold_batch_norm.h"

#include <cmath>
#include <string>

#include "norm/overlap.h"
#include "norm/validation.h"

namespace bnorm::deploy {

using norm::buffer_of;
using norm::fail;
using norm::str;
using norm::value_or;

template <class T>
void fold_batch_norm(const char* op, int64_t out_channels, int64_t per_channel, const T* weight,
                     const T* bias, const T* running_mean, const T* running_var, const T* gamma,
                     const T* beta, double eps, T* folded_weight, T* folded_bias) {
  if (out_channels < 1)
    fail(BNORM_ERROR_INVALID_SHAPE, op,
         "out_channels must be >= 1 (the weight's first dimension), got " + str(out_channels));
  if (per_channel < 1)
    fail(BNORM_ERROR_INVALID_SHAPE, op,
         "per_channel must be >= 1 (the weights of one output channel), got " + str(per_channel));
  const int64_t count = norm::checked_product(op, "out_channels * per_channel",
                                              {out_channels, per_channel});
  norm::require(weight, op, "weight");
  norm::require(running_mean, op, "running_mean");
  norm::require(running_var, op, "running_var");
  norm::require(folded_weight, op, "folded_weight");
  norm::require(folded_bias, op, "folded_bias");
  norm::check_eps(op, eps);
  const int64_t c = out_channels;
  norm::check_no_overlap(op,
                         {buffer_of("folded_weight", folded_weight, count, true),
                          buffer_of("folded_bias", folded_bias, c, true),
                          buffer_of("weight", weight, count, false),
                          buffer_of("bias", bias, c, false),
                          buffer_of("running_mean", running_mean, c, false),
                          buffer_of("running_var", running_var, c, false),
                          buffer_of("gamma", gamma, c, false), buffer_of("beta", beta, c, false)},
                         {{"folded_weight", "weight"}, {"folded_bias", "bias"}});
  // A negative variance (or -eps exactly) has no square root: a corrupted statistic, not
  // a value to fold. NaN is let through: it makes its own channel NaN, visibly.
  for (int64_t k = 0; k < c; ++k)
    if (static_cast<double>(running_var[k]) + eps <= 0)
      fail(BNORM_ERROR_INVALID_VALUE, op,
           "running_var[" + str(k) + "] + eps must be > 0, got " + str(running_var[k]) +
               " + " + str(eps));
  for (int64_t k = 0; k < c; ++k) {
    const double scale =
        value_or(gamma, k, 1.0) / std::sqrt(static_cast<double>(running_var[k]) + eps);
    // Read this channel's bias before writing its folded bias (they may be one array).
    const double shifted = (value_or(bias, k, 0.0) - static_cast<double>(running_mean[k])) * scale +
                           value_or(beta, k, 0.0);
    const T* row = weight + k * per_channel;
    T* out = folded_weight + k * per_channel;
    for (int64_t j = 0; j < per_channel; ++j)
      out[j] = static_cast<T>(static_cast<double>(row[j]) * scale);
    folded_bias[k] = static_cast<T>(shifted);
  }
}

template void fold_batch_norm<float>(const char*, int64_t, int64_t, const float*, const float*,
                                     const float*, const float*, const float*, const float*,
                                     double, float*, float*);
template void fold_batch_norm<double>(const char*, int64_t, int64_t, const double*,
                                      const double*, const double*, const double*,
                                      const double*, const double*, double, double*, double*);

}  // namespace bnorm::deploy
