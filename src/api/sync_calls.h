// The C++ SyncBN calls with a refusal the caller already made (BatchNorm's own checks
// on a synchronized module): it travels through the collective, so that no process
// waits for one that gave up (sync_batch_norm.h), then it is thrown.
#pragma once

#include <bnorm/sync_batch_norm.hpp>

namespace bnorm::api {

template <class T>
void sync_forward(const bnorm_collective& collective, const TensorView<const T>& x,
                  const TensorView<T>& y, std::span<const T> weight, std::span<const T> bias,
                  double eps, const RunningStatsUpdate& update, std::span<T> running_mean,
                  std::span<T> running_var, std::span<T> save_mean, std::span<T> save_invstd,
                  const Error* refused);

template <class T>
void sync_backward(const bnorm_collective& collective, const TensorView<const T>& x,
                   const TensorView<const T>& dy, const TensorView<T>& dx,
                   std::span<const T> weight, std::span<const T> save_mean,
                   std::span<const T> save_invstd, std::span<T> dweight, std::span<T> dbias,
                   const Error* refused);

}  // namespace bnorm::api
