// The C API of SyncBN (include/bnorm/sync_batch_norm.h): the front-end in src/dist/,
// its exceptions turned into a status code plus a per-thread message, as every entry.
#include <bnorm/sync_batch_norm.hpp>

#include <optional>
#include <string>
#include <vector>

#include "api/allocation_errors.h"
#include "api/guarded.h"
#include "api/sync_calls.h"
#include "api/tensor_checks.h"
#include "dist/sync_batch_norm.h"

namespace {

const bnorm_running_stats_update default_update{0.1, BNORM_RUNNING_VAR_UNBIASED, nullptr};

}  // namespace

extern "C" int64_t bnorm_sync_batch_norm_forward_doubles(int64_t c) {
  return bnorm::dist::forward_message_doubles(c);
}
extern "C" int64_t bnorm_sync_batch_norm_backward_doubles(int64_t c) {
  return bnorm::dist::backward_message_doubles(c);
}

#define BNORM_DEFINE_SYNC_C_API(T, SUFFIX)                                                     \
  extern "C" bnorm_status bnorm_sync_batch_norm_forward_training_##SUFFIX(                     \
      const bnorm_collective* collective, bnorm_layout layout, int64_t n, int64_t c,           \
      int64_t spatial, const T* x, T* y, const T* weight, const T* bias, double eps,           \
      const bnorm_running_stats_update* update, T* running_mean, T* running_var,               \
      T* save_mean, T* save_invstd) {                                                          \
    const char* op = "bnorm_sync_batch_norm_forward_training_" #SUFFIX;                        \
    return bnorm::api::guarded(op, [&] {                                                       \
      bnorm::dist::sync_forward_training<T>(op, collective, {layout, n, c, spatial}, x, y,     \
                                            weight, bias, eps,                                 \
                                            update ? *update : default_update, running_mean,   \
                                            running_var, save_mean, save_invstd);              \
    });                                                                                        \
  }                                                                                            \
  extern "C" bnorm_status bnorm_sync_batch_norm_backward_##SUFFIX(                             \
      const bnorm_collective* collective, bnorm_layout layout, int64_t n, int64_t c,           \
      int64_t spatial, const T* x, const T* dy, T* dx, const T* weight, const T* save_mean,    \
      const T* save_invstd, T* dweight, T* dbias) {                                            \
    const char* op = "bnorm_sync_batch_norm_backward_" #SUFFIX;                                \
    return bnorm::api::guarded(op, [&] {                                                       \
      bnorm::dist::sync_backward<T>(op, collective, {layout, n, c, spatial}, x, dy, dx,        \
                                    weight, save_mean, save_invstd, dweight, dbias);           \
    });                                                                                        \
  }

BNORM_DEFINE_SYNC_C_API(float, f32)
BNORM_DEFINE_SYNC_C_API(double, f64)
#undef BNORM_DEFINE_SYNC_C_API

// ---- C++ API (sync_batch_norm.hpp) -----------------------------------------------------

namespace bnorm {
namespace api {

// (N, C, *spatial) with N >= 0: this process's slice.
template <class T>
norm::Problem slice_problem(const char* op, const TensorView<const T>& x) {
  if (x.sizes.size() < 2)
    throw Error(BNORM_ERROR_INVALID_SHAPE, std::string(op) + ": x must have rank >= 2 (N, C, "
                "*spatial), got rank " + std::to_string(x.sizes.size()));
  if (x.sizes[0] < 0)
    throw Error(BNORM_ERROR_INVALID_SHAPE, std::string(op) + ": x size " +
                std::to_string(x.sizes[0]) + " at dim 0 must be >= 0 (this process's slice)");
  std::vector<int64_t> rest(x.sizes.begin(), x.sizes.end());
  rest[0] = 1;
  norm::Problem p = norm::problem_from_sizes(op, "x", rest, x.layout);
  p.n = x.sizes[0];
  return p;
}

template <class T>
void sync_forward(const bnorm_collective& collective, const TensorView<const T>& x,
                  const TensorView<T>& y, std::span<const T> weight, std::span<const T> bias,
                  double eps, const RunningStatsUpdate& update, std::span<T> running_mean,
                  std::span<T> running_var, std::span<T> save_mean, std::span<T> save_invstd,
                  const Error* refused) {
  const char* op = "sync_batch_norm_forward_training";
  // The checks the C API cannot make, reported through the collective like its own.
  // The channel count a refusal's message is sized by: every process must send as many.
  const int64_t channels = !save_mean.empty() ? static_cast<int64_t>(save_mean.size())
                           : x.sizes.size() >= 2 ? x.sizes[1] : 0;
  norm::Problem p{static_cast<bnorm_layout>(x.layout), 0, channels, 1};
  bnorm_running_stats_update u{};
  const T *w = nullptr, *b = nullptr;
  T *rm = nullptr, *rv = nullptr, *sm = nullptr, *si = nullptr;
  const std::optional<Error> caught = dist::refusal_of(op, refused, [&] {
    p = slice_problem(op, x);
    check_same_shape(op, "y", y, x);
    u = c_update(op, update);
    w = per_channel(op, "weight", weight, p.c);
    b = per_channel(op, "bias", bias, p.c);
    rm = per_channel(op, "running_mean", running_mean, p.c);
    rv = per_channel(op, "running_var", running_var, p.c);
    sm = per_channel(op, "save_mean", save_mean, p.c);
    si = per_channel(op, "save_invstd", save_invstd, p.c);
  });
  allocation_failures_as_errors(op, [&] {
    dist::sync_forward_training<T>(op, &collective, p, x.data, y.data, w, b, eps, u, rm, rv, sm,
                                   si, caught ? &*caught : nullptr);
  });
}

template <class T>
void sync_backward(const bnorm_collective& collective, const TensorView<const T>& x,
                   const TensorView<const T>& dy, const TensorView<T>& dx,
                   std::span<const T> weight, std::span<const T> save_mean,
                   std::span<const T> save_invstd, std::span<T> dweight, std::span<T> dbias,
                   const Error* refused) {
  const char* op = "sync_batch_norm_backward";
  const int64_t channels = !save_mean.empty() ? static_cast<int64_t>(save_mean.size())
                           : x.sizes.size() >= 2 ? x.sizes[1] : 0;
  norm::Problem p{static_cast<bnorm_layout>(x.layout), 0, channels, 1};
  const T *w = nullptr, *sm = nullptr, *si = nullptr;
  T *dw = nullptr, *db = nullptr;
  const std::optional<Error> caught = dist::refusal_of(op, refused, [&] {
    p = slice_problem(op, x);
    check_same_shape(op, "dy", dy, x);
    if (dx.data) check_same_shape(op, "dx", dx, x);
    w = per_channel(op, "weight", weight, p.c);
    sm = per_channel(op, "save_mean", save_mean, p.c);
    si = per_channel(op, "save_invstd", save_invstd, p.c);
    dw = per_channel(op, "dweight", dweight, p.c);
    db = per_channel(op, "dbias", dbias, p.c);
  });
  allocation_failures_as_errors(op, [&] {
    dist::sync_backward<T>(op, &collective, p, x.data, dy.data, dx.data, w, sm, si, dw, db,
                           caught ? &*caught : nullptr);
  });
}

#define BNORM_INSTANTIATE(T)                                                                  \
  template void sync_forward<T>(const bnorm_collective&, const TensorView<const T>&,          \
                                const TensorView<T>&, std::span<const T>, std::span<const T>, \
                                double, const RunningStatsUpdate&, std::span<T>, std::span<T>, \
                                std::span<T>, std::span<T>, const Error*);                    \
  template void sync_backward<T>(const bnorm_collective&, const TensorView<const T>&,         \
                                 const TensorView<const T>&, const TensorView<T>&,            \
                                 std::span<const T>, std::span<const T>, std::span<const T>,  \
                                 std::span<T>, std::span<T>, const Error*);
BNORM_INSTANTIATE(float)
BNORM_INSTANTIATE(double)
#undef BNORM_INSTANTIATE

}  // namespace api

template <class T>
void sync_batch_norm_forward_training(const bnorm_collective& collective,
                                      const TensorView<const T>& x, const TensorView<T>& y,
                                      std::span<const T> weight, std::span<const T> bias,
                                      double eps, const RunningStatsUpdate& update,
                                      std::span<T> running_mean, std::span<T> running_var,
                                      std::span<T> save_mean, std::span<T> save_invstd) {
  api::sync_forward<T>(collective, x, y, weight, bias, eps, update, running_mean, running_var,
                       save_mean, save_invstd, nullptr);
}

template <class T>
void sync_batch_norm_backward(const bnorm_collective& collective, const TensorView<const T>& x,
                              const TensorView<const T>& dy, const TensorView<T>& dx,
                              std::span<const T> weight, std::span<const T> save_mean,
                              std::span<const T> save_invstd, std::span<T> dweight,
                              std::span<T> dbias) {
  api::sync_backward<T>(collective, x, dy, dx, weight, save_mean, save_invstd, dweight, dbias,
                        nullptr);
}

// The public API's instantiations are exported from libbnorm.so (bnorm/export.h).
#define BNORM_INSTANTIATE(T)                                                                  \
  template BNORM_API void sync_batch_norm_forward_training<T>(                                 \
      const bnorm_collective&, const TensorView<const T>&, const TensorView<T>&,              \
      std::span<const T>, std::span<const T>, double, const RunningStatsUpdate&, std::span<T>, \
      std::span<T>, std::span<T>, std::span<T>);                                              \
  template BNORM_API void sync_batch_norm_backward<T>(                                         \
      const bnorm_collective&, const TensorView<const T>&, const TensorView<const T>&,        \
      const TensorView<T>&, std::span<const T>, std::span<const T>, std::span<const T>,       \
      std::span<T>, std::span<T>);
BNORM_INSTANTIATE(float)
BNORM_INSTANTIATE(double)
#undef BNORM_INSTANTIATE

}  // namespace bnorm
