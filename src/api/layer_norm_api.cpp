// The C API of layer norm and RMS norm (bnorm.h): each entry point runs the front-end
// (norm/layer_norm.h) through guarded().
#include <bnorm/bnorm.h>

#include "api/guarded.h"
#include "norm/layer_norm.h"

using bnorm::api::guarded;

#define BNORM_DEFINE_LAYER_NORM_C_API(T, SUFFIX)                                               \
  extern "C" bnorm_status bnorm_layer_norm_forward_##SUFFIX(                                   \
      int64_t rows, int64_t cols, const T* x, T* y, const T* weight, const T* bias,            \
      double eps, T* save_mean, T* save_rstd) {                                                \
    const char* op = "bnorm_layer_norm_forward_" #SUFFIX;                                      \
    return guarded(op, [&] {                                                                   \
      bnorm::norm::layer_norm_forward<T>(op, rows, cols, x, y, weight, bias, eps, save_mean,   \
                                         save_rstd);                                           \
    });                                                                                        \
  }                                                                                            \
  extern "C" bnorm_status bnorm_layer_norm_backward_##SUFFIX(                                  \
      int64_t rows, int64_t cols, const T* x, const T* dy, T* dx, const T* weight,             \
      const T* save_mean, const T* save_rstd, T* dweight, T* dbias) {                          \
    const char* op = "bnorm_layer_norm_backward_" #SUFFIX;                                     \
    return guarded(op, [&] {                                                                   \
      bnorm::norm::layer_norm_backward<T>(op, rows, cols, x, dy, dx, weight, save_mean,        \
                                          save_rstd, dweight, dbias);                          \
    });                                                                                        \
  }                                                                                            \
  extern "C" bnorm_status bnorm_rms_norm_forward_##SUFFIX(                                     \
      int64_t rows, int64_t cols, const T* x, T* y, const T* weight, double eps,               \
      T* save_rstd) {                                                                          \
    const char* op = "bnorm_rms_norm_forward_" #SUFFIX;                                        \
    return guarded(op, [&] {                                                                   \
      bnorm::norm::rms_norm_forward<T>(op, rows, cols, x, y, weight, eps, save_rstd);          \
    });                                                                                        \
  }                                                                                            \
  extern "C" bnorm_status bnorm_rms_norm_backward_##SUFFIX(                                    \
      int64_t rows, int64_t cols, const T* x, const T* dy, T* dx, const T* weight,             \
      const T* save_rstd, T* dweight) {                                                        \
    const char* op = "bnorm_rms_norm_backward_" #SUFFIX;                                       \
    return guarded(op, [&] {                                                                   \
      bnorm::norm::rms_norm_backward<T>(op, rows, cols, x, dy, dx, weight, save_rstd,          \
                                        dweight);                                              \
    });                                                                                        \
  }

BNORM_DEFINE_LAYER_NORM_C_API(float, f32)
BNORM_DEFINE_LAYER_NORM_C_API(double, f64)
#undef BNORM_DEFINE_LAYER_NORM_C_API
