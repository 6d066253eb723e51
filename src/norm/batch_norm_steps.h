// Batch norm's steps between the reduction and the elementwise pass, shared by the
// one-process front-end (batch_norm.cpp) and SyncBN (src/dist/sync_batch_norm.cpp):
//   reduction (kernels) -> [SyncBN: one collective] -> coefficients (here) -> elementwise
// pass (kernels). Everything here is per channel and in double.
#pragma once

#include <bnorm/bnorm.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <new>

#include "kernels/affine.h"
#include "kernels/moments.h"
#include "norm/validation.h"

namespace bnorm::norm {

// The factor the running statistics move by: momentum, or 1 / (num_batches_tracked + 1)
// for the cumulative average; checks every field of the update first.
double check_update(const char* op, const bnorm_running_stats_update& update);

// 1 / sqrt(var + eps) of batch statistics, as ATen's InvStd: 0 for a constant channel
// with eps == 0 (var == 0), so that y = bias and dx = 0 instead of 0 * Inf = NaN. A NaN
// var stays NaN. (Inference keeps 1 / sqrt(running_var + eps), Inf there, as PyTorch.)
inline double batch_invstd(double var, double eps) {
  return var == 0 && eps == 0 ? 0.0 : 1.0 / std::sqrt(var + eps);
}

// running = (1 - factor) * running + factor * batch, per channel, with the batch's
// biased or unbiased variance; a null buffer is not updated.
template <class T>
void update_running_stats(const kernels::Moments* moments, int64_t c, double factor,
                          bnorm_running_var_estimator estimator, T* running_mean,
                          T* running_var) {
  for (int64_t ch = 0; ch < c; ++ch) {
    const kernels::Moments& mo = moments[ch];
    const double batch_var = estimator == BNORM_RUNNING_VAR_BIASED ? mo.biased_variance()
                                                                   : mo.unbiased_variance();
    if (running_mean)
      running_mean[ch] = static_cast<T>((1 - factor) * static_cast<double>(running_mean[ch]) +
                                        factor * mo.mean);
    if (running_var)
      running_var[ch] = static_cast<T>((1 - factor) * static_cast<double>(running_var[ch]) +
                                       factor * batch_var);
  }
}

// Per-channel coefficient arrays. A channel count too large to allocate (c * arrays
// overflowing included) is std::bad_alloc: BNORM_ERROR_OUT_OF_MEMORY.
template <class T>
struct Coefficients {
  struct Tag {};
  T* storage;
  explicit Coefficients(int64_t c, int arrays) : storage(scratch<Tag, T>(checked_count(c, arrays))) {}
  static size_t checked_count(int64_t c, int arrays) {
    if (c > std::numeric_limits<int64_t>::max() / 64 / arrays) throw std::bad_alloc();
    return static_cast<size_t>(c * arrays);
  }
  T* array(int64_t c, int index) { return storage + c * index; }
};

// Training forward, per channel: from the batch moments to the map
//   y = ((x - mean_hi) - mean_lo) * (weight * invstd) + bias,  mean = mean_hi + mean_lo,
// kept in hi, lo, scale, shift (for the separate apply pass), with save_mean = mean_hi
// and save_invstd when asked. The fused kernel calls it between reduce and normalize.
template <class T>
struct TrainingAffine {
  const T* weight;
  const T* bias;
  double eps;
  T *hi, *lo, *scale, *shift;
  T *save_mean, *save_invstd;

  kernels::AffineCoefficients<T> operator()(int64_t ch, const kernels::Moments& moments) const {
    const double mean = moments.mean;
    const double invstd = batch_invstd(moments.biased_variance(), eps);
    hi[ch] = static_cast<T>(mean);
    lo[ch] = static_cast<T>(mean - static_cast<double>(hi[ch]));
    scale[ch] = static_cast<T>(value_or(weight, ch, 1.0) * invstd);
    shift[ch] = static_cast<T>(value_or(bias, ch, 0.0));
    if (save_mean) save_mean[ch] = hi[ch];
    if (save_invstd) save_invstd[ch] = static_cast<T>(invstd);
    return {hi[ch], lo[ch], scale[ch], shift[ch]};
  }
  static kernels::AffineCoefficients<T> call(void* self, int64_t ch, const kernels::Moments& moments) {
    return (*static_cast<const TrainingAffine*>(self))(ch, moments);
  }
};

// Backward, per channel: from the sums to dweight, dbias and dx's map. With
// xc = x - save_mean and the exact batch mean = save_mean + delta, delta = sum(xc) / m
// (save_mean is the mean rounded to T: it loses digits when |mean| >> std; x has them
// all):
//   sum(dy * (x - mean)) = sum(dy * xc) - delta * sum(dy)
//   dweight = invstd * sum(dy * (x - mean)),  dbias = sum(dy)
//   dx = weight * invstd * (dy - mean(dy) - (x - mean) * invstd^2 * mean(dy * (x - mean)))
//      = dy * k + ((x - save_mean) - delta) * q + r
template <class T>
struct BackwardAffineMaker {
  double m;  // values per channel
  const T* weight;
  const T* save_mean;
  const T* save_invstd;
  T *lo, *k, *q, *r;
  T *dweight, *dbias;

  kernels::BackwardCoefficients<T> operator()(int64_t ch, const kernels::BackwardSums& s) const {
    const double delta = s.xc_sum / m;
    const double dy_xmean_sum = s.dy_xc_sum - delta * s.dy_sum;
    const double invstd = static_cast<double>(save_invstd[ch]);
    const double w = value_or(weight, ch, 1.0);
    lo[ch] = static_cast<T>(delta);
    k[ch] = static_cast<T>(w * invstd);
    q[ch] = static_cast<T>(-w * invstd * invstd * invstd * (dy_xmean_sum / m));
    r[ch] = static_cast<T>(-w * invstd * (s.dy_sum / m));
    if (dweight) dweight[ch] = static_cast<T>(dy_xmean_sum * invstd);
    if (dbias) dbias[ch] = static_cast<T>(s.dy_sum);
    return {save_mean[ch], lo[ch], k[ch], q[ch], r[ch]};
  }
  static kernels::BackwardCoefficients<T> call(void* self, int64_t ch, const kernels::BackwardSums& s) {
    return (*static_cast<const BackwardAffineMaker*>(self))(ch, s);
  }
};

}  // namespace bnorm::norm
