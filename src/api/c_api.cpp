// The C API: each entry point runs the front-end and turns its exception into a status
// code plus a per-thread message (bnorm_last_error). No exception crosses into C.
#include <bnorm/bnorm.h>

#include <new>
#include <stdexcept>
#include <string>

#include "kernels/relu_mask.h"
#include "api/guarded.h"
#include "norm/batch_norm.h"

namespace {

using bnorm::api::guarded;

// PyTorch/cuDNN defaults for the plain (non-_ex) training forward.
bnorm_running_stats_update plain_update(double momentum) {
  return bnorm_running_stats_update{momentum, BNORM_RUNNING_VAR_UNBIASED, nullptr};
}

const bnorm_running_stats_update default_update = plain_update(0.1);

}  // namespace

#define BNORM_DEFINE_C_API(T, SUFFIX)                                                          \
  extern "C" bnorm_status bnorm_batch_norm_forward_training_##SUFFIX(                          \
      bnorm_layout layout, int64_t n, int64_t c, int64_t spatial, const T* x, T* y,           \
      const T* weight, const T* bias, double eps, double momentum, T* running_mean,            \
      T* running_var, T* save_mean, T* save_invstd) {                                          \
    const char* op = "bnorm_batch_norm_forward_training_" #SUFFIX;                             \
    return guarded(op, [&] {                                                                   \
      if (momentum == BNORM_MOMENTUM_CUMULATIVE)                                               \
        throw bnorm::Error(BNORM_ERROR_INVALID_VALUE,                                          \
                           std::string(op) +                                                   \
                               ": momentum BNORM_MOMENTUM_CUMULATIVE needs num_batches_tracked;" \
                               " use bnorm_batch_norm_forward_training_ex_" #SUFFIX);          \
      bnorm::norm::forward_training<T>(op, {layout, n, c, spatial}, x, y, weight, bias, eps,   \
                                       plain_update(momentum), running_mean, running_var,      \
                                       save_mean, save_invstd);                                \
    });                                                                                        \
  }                                                                                            \
  extern "C" bnorm_status bnorm_batch_norm_forward_training_ex_##SUFFIX(                       \
      bnorm_layout layout, int64_t n, int64_t c, int64_t spatial, const T* x, T* y,           \
      const T* weight, const T* bias, double eps, const bnorm_running_stats_update* update,    \
      T* running_mean, T* running_var, T* save_mean, T* save_invstd) {                         \
    const char* op = "bnorm_batch_norm_forward_training_ex_" #SUFFIX;                          \
    return guarded(op, [&] {                                                                   \
      bnorm::norm::forward_training<T>(op, {layout, n, c, spatial}, x, y, weight, bias, eps,   \
                                       update ? *update : default_update, running_mean,        \
                                       running_var, save_mean, save_invstd);                   \
    });                                                                                        \
  }                                                                                            \
  extern "C" bnorm_status bnorm_batch_norm_forward_inference_##SUFFIX(                         \
      bnorm_layout layout, int64_t n, int64_t c, int64_t spatial, const T* x, T* y,           \
      const T* weight, const T* bias, const T* running_mean, const T* running_var,             \
      double eps) {                                                                            \
    const char* op = "bnorm_batch_norm_forward_inference_" #SUFFIX;                            \
    return guarded(op, [&] {                                                                   \
      bnorm::norm::forward_inference<T>(op, {layout, n, c, spatial}, x, y, weight, bias,       \
                                        running_mean, running_var, eps);                       \
    });                                                                                        \
  }                                                                                            \
  extern "C" bnorm_status bnorm_batch_norm_backward_##SUFFIX(                                  \
      bnorm_layout layout, int64_t n, int64_t c, int64_t spatial, const T* x, const T* dy,    \
      T* dx, const T* weight, const T* save_mean, const T* save_invstd, T* dweight,            \
      T* dbias) {                                                                              \
    const char* op = "bnorm_batch_norm_backward_" #SUFFIX;                                     \
    return guarded(op, [&] {                                                                   \
      bnorm::norm::backward<T>(op, {layout, n, c, spatial}, x, dy, dx, weight, save_mean,      \
                               save_invstd, dweight, dbias);                                   \
    });                                                                                        \
  }                                                                                            \
  extern "C" bnorm_status bnorm_batch_norm_backward_inference_##SUFFIX(                        \
      bnorm_layout layout, int64_t n, int64_t c, int64_t spatial, const T* x, const T* dy,    \
      T* dx, const T* weight, const T* running_mean, const T* running_var, double eps,         \
      T* dweight, T* dbias) {                                                                  \
    const char* op = "bnorm_batch_norm_backward_inference_" #SUFFIX;                           \
    return guarded(op, [&] {                                                                   \
      bnorm::norm::backward_inference<T>(op, {layout, n, c, spatial}, x, dy, dx, weight,       \
                                         running_mean, running_var, eps, dweight, dbias);      \
    });                                                                                        \
  }                                                                                            \
  extern "C" bnorm_status bnorm_batch_norm_relu_forward_training_##SUFFIX(                     \
      bnorm_layout layout, int64_t n, int64_t c, int64_t spatial, const T* x, T* y,           \
      const T* weight, const T* bias, double eps, const bnorm_running_stats_update* update,    \
      T* running_mean, T* running_var, T* save_mean, T* save_invstd, uint8_t* relu_mask) {     \
    const char* op = "bnorm_batch_norm_relu_forward_training_" #SUFFIX;                        \
    return guarded(op, [&] {                                                                   \
      bnorm::norm::forward_training<T>(op, {layout, n, c, spatial}, x, y, weight, bias, eps,   \
                                       update ? *update : default_update, running_mean,        \
                                       running_var, save_mean, save_invstd,                    \
                                       bnorm::norm::ReluOutput{true, relu_mask});              \
    });                                                                                        \
  }                                                                                            \
  extern "C" bnorm_status bnorm_batch_norm_relu_forward_inference_##SUFFIX(                    \
      bnorm_layout layout, int64_t n, int64_t c, int64_t spatial, const T* x, T* y,           \
      const T* weight, const T* bias, const T* running_mean, const T* running_var,             \
      double eps, uint8_t* relu_mask) {                                                        \
    const char* op = "bnorm_batch_norm_relu_forward_inference_" #SUFFIX;                       \
    return guarded(op, [&] {                                                                   \
      bnorm::norm::forward_inference<T>(op, {layout, n, c, spatial}, x, y, weight, bias,       \
                                        running_mean, running_var, eps,                        \
                                        bnorm::norm::ReluOutput{true, relu_mask});             \
    });                                                                                        \
  }                                                                                            \
  extern "C" bnorm_status bnorm_batch_norm_relu_backward_##SUFFIX(                             \
      bnorm_layout layout, int64_t n, int64_t c, int64_t spatial, const T* x, const T* y,     \
      const uint8_t* relu_mask, const T* dy, T* dx, const T* weight, const T* save_mean,       \
      const T* save_invstd, T* dweight, T* dbias) {                                            \
    const char* op = "bnorm_batch_norm_relu_backward_" #SUFFIX;                                \
    return guarded(op, [&] {                                                                   \
      bnorm::norm::backward<T>(op, {layout, n, c, spatial}, x, dy, dx, weight, save_mean,      \
                               save_invstd, dweight, dbias, true,                              \
                               bnorm::norm::ReluGate<T>{y, relu_mask});                        \
    });                                                                                        \
  }                                                                                            \
  extern "C" bnorm_status bnorm_batch_norm_relu_backward_inference_##SUFFIX(                   \
      bnorm_layout layout, int64_t n, int64_t c, int64_t spatial, const T* x, const T* y,     \
      const uint8_t* relu_mask, const T* dy, T* dx, const T* weight, const T* running_mean,    \
      const T* running_var, double eps, T* dweight, T* dbias) {                                \
    const char* op = "bnorm_batch_norm_relu_backward_inference_" #SUFFIX;                      \
    return guarded(op, [&] {                                                                   \
      bnorm::norm::backward_inference<T>(op, {layout, n, c, spatial}, x, dy, dx, weight,       \
                                         running_mean, running_var, eps, dweight, dbias, true, \
                                         bnorm::norm::ReluGate<T>{y, relu_mask});              \
    });                                                                                        \
  }

BNORM_DEFINE_C_API(float, f32)
BNORM_DEFINE_C_API(double, f64)
#undef BNORM_DEFINE_C_API

extern "C" int64_t bnorm_relu_mask_bytes(int64_t n, int64_t c, int64_t spatial) {
  int64_t count = 0;
  if (n < 0 || c < 0 || spatial < 0 || __builtin_mul_overflow(n, c, &count) ||
      __builtin_mul_overflow(count, spatial, &count))
    return -1;
  return bnorm::kernels::relu_mask_bytes(count);
}

namespace {
thread_local std::string last_error;
}  // namespace

void bnorm::api::set_last_error(const char* op, const char* what, const char* detail) noexcept {
  try {
    last_error = std::string(op) + what + detail;
  } catch (...) {
    last_error.clear();
  }
}

extern "C" const char* bnorm_last_error(void) { return last_error.c_str(); }

extern "C" const char* bnorm_status_string(bnorm_status status) {
  switch (status) {
    case BNORM_SUCCESS: return "BNORM_SUCCESS";
    case BNORM_ERROR_NULL_POINTER: return "BNORM_ERROR_NULL_POINTER";
    case BNORM_ERROR_INVALID_SHAPE: return "BNORM_ERROR_INVALID_SHAPE";
    case BNORM_ERROR_SIZE_OVERFLOW: return "BNORM_ERROR_SIZE_OVERFLOW";
    case BNORM_ERROR_TOO_FEW_VALUES: return "BNORM_ERROR_TOO_FEW_VALUES";
    case BNORM_ERROR_INVALID_VALUE: return "BNORM_ERROR_INVALID_VALUE";
    case BNORM_ERROR_SHAPE_MISMATCH: return "BNORM_ERROR_SHAPE_MISMATCH";
    case BNORM_ERROR_INVALID_STATE: return "BNORM_ERROR_INVALID_STATE";
    case BNORM_ERROR_OUT_OF_MEMORY: return "BNORM_ERROR_OUT_OF_MEMORY";
    case BNORM_ERROR_INTERNAL: return "BNORM_ERROR_INTERNAL";
    case BNORM_ERROR_OVERLAP: return "BNORM_ERROR_OVERLAP";
    case BNORM_ERROR_COLLECTIVE: return "BNORM_ERROR_COLLECTIVE";
  }
  return "unknown bnorm_status";
}

extern "C" int bnorm_version(void) { return BNORM_VERSION_NUMBER; }
extern "C" const char* bnorm_version_string(void) { return BNORM_VERSION_STRING; }
