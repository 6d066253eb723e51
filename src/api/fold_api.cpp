// Batch norm folding (bnorm.h, bnorm.hpp): the C entry points run the front-end
// (deploy/fold_batch_norm.h) through guarded(); the C++ one checks the sizes the C API
// cannot see and throws.
#include <bnorm/bnorm.h>
#include <bnorm/bnorm.hpp>

#include <string>

#include "api/guarded.h"
#include "api/tensor_checks.h"
#include "deploy/fold_batch_norm.h"

using bnorm::api::guarded;

#define BNORM_DEFINE_FOLD_C_API(T, SUFFIX)                                                     \
  extern "C" bnorm_status bnorm_fold_batch_norm_##SUFFIX(                                      \
      int64_t out_channels, int64_t per_channel, const T* weight, const T* bias,               \
      const T* running_mean, const T* running_var, const T* gamma, const T* beta, double eps, \
      T* folded_weight, T* folded_bias) {                                                      \
    const char* op = "bnorm_fold_batch_norm_" #SUFFIX;                                         \
    return guarded(op, [&] {                                                                   \
      bnorm::deploy::fold_batch_norm<T>(op, out_channels, per_channel, weight, bias,           \
                                        running_mean, running_var, gamma, beta, eps,           \
                                        folded_weight, folded_bias);                           \
    });                                                                                        \
  }

BNORM_DEFINE_FOLD_C_API(float, f32)
BNORM_DEFINE_FOLD_C_API(double, f64)
#undef BNORM_DEFINE_FOLD_C_API

namespace bnorm {

template <class T>
void fold_batch_norm(const TensorView<const T>& weight, std::span<const T> bias,
                     std::span<const T> running_mean, std::span<const T> running_var,
                     std::span<const T> gamma, std::span<const T> beta, double eps,
                     const TensorView<T>& folded_weight, std::span<T> folded_bias) {
  const char* op = "fold_batch_norm";
  if (weight.sizes.empty())
    throw Error(BNORM_ERROR_INVALID_SHAPE,
                std::string(op) + ": weight must have rank >= 1 (output channels first), got a "
                                  "rank-0 tensor");
  if (folded_weight.sizes != weight.sizes)
    throw Error(BNORM_ERROR_SHAPE_MISMATCH,
                std::string(op) + ": folded_weight is " +
                    api::describe(folded_weight.sizes, Layout::channels_first) +
                    ", expected weight's " + api::describe(weight.sizes, Layout::channels_first));
  // The formula reads both as (out_channels, rest) in memory order: a layout flag that
  // differs would scramble the result, so the two must agree.
  if (folded_weight.layout != weight.layout)
    throw Error(BNORM_ERROR_INVALID_SHAPE,
                std::string(op) + ": folded_weight's layout must be weight's (both channels-"
                                  "first or both channels-last)");
  if (weight.layout != Layout::channels_first)
    throw Error(BNORM_ERROR_INVALID_SHAPE,
                std::string(op) + ": weight's layout must be channels-first (output channels "
                                  "outermost, as conv and linear weights are stored)");
  const int64_t channels = weight.sizes[0];
  int64_t per_channel = 1;
  for (size_t d = 1; d < weight.sizes.size(); ++d) {
    if (weight.sizes[d] < 1)
      throw Error(BNORM_ERROR_INVALID_SHAPE, std::string(op) + ": weight's size " +
                                                 std::to_string(d) + " must be >= 1, got " +
                                                 std::to_string(weight.sizes[d]));
    if (__builtin_mul_overflow(per_channel, weight.sizes[d], &per_channel))
      throw Error(BNORM_ERROR_SIZE_OVERFLOW,
                  std::string(op) + ": weight's element count does not fit in int64_t");
  }
  // Required per-channel arrays: an empty span is a missing argument, as NULL is in C.
  auto required = [&](const char* name, auto values) {
    if (values.empty())
      throw Error(BNORM_ERROR_NULL_POINTER,
                  std::string(op) + ": " + name + " must not be empty (one value per channel)");
    return api::per_channel(op, name, values, channels);
  };
  const T* mean = required("running_mean", running_mean);
  const T* var = required("running_var", running_var);
  T* out_bias = required("folded_bias", folded_bias);
  deploy::fold_batch_norm<T>(op, channels, per_channel, weight.data,
                             api::per_channel(op, "bias", bias, channels), mean, var,
                             api::per_channel(op, "gamma", gamma, channels),
                             api::per_channel(op, "beta", beta, channels), eps,
                             folded_weight.data, out_bias);
}

// The public API's instantiations are exported from libbnorm.so (bnorm/export.h).
template BNORM_API void fold_batch_norm<float>(const TensorView<const float>&, std::span<const float>,
                                     std::span<const float>, std::span<const float>,
                                     std::span<const float>, std::span<const float>, double,
                                     const TensorView<float>&, std::span<float>);
template BNORM_API void fold_batch_norm<double>(const TensorView<const double>&, std::span<const double>,
                                      std::span<const double>, std::span<const double>,
                                      std::span<const double>, std::span<const double>, double,
                                      const TensorView<double>&, std::span<double>);

}  // namespace bnorm
