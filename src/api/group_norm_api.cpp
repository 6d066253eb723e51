// The C API of group norm and instance norm (bnorm.h): each entry point runs the
// front-end (norm/group_norm.h; instance norm with running statistics is batch norm's
// fixed-statistics map) through guarded().
#include <bnorm/bnorm.h>

#include "api/guarded.h"
#include "norm/batch_norm.h"
#include "norm/group_norm.h"
#include "norm/validation.h"

using bnorm::api::guarded;

#define BNORM_DEFINE_GROUP_NORM_C_API(T, SUFFIX)                                               \
  extern "C" bnorm_status bnorm_group_norm_forward_##SUFFIX(                                   \
      bnorm_layout layout, int64_t n, int64_t c, int64_t spatial, int64_t groups, const T* x, \
      T* y, const T* weight, const T* bias, double eps, T* save_mean, T* save_rstd) {          \
    const char* op = "bnorm_group_norm_forward_" #SUFFIX;                                      \
    return guarded(op, [&] {                                                                   \
      bnorm::norm::group_norm_forward<T>(op, {layout, n, c, spatial}, groups, x, y, weight,    \
                                         bias, eps, save_mean, save_rstd);                     \
    });                                                                                        \
  }                                                                                            \
  extern "C" bnorm_status bnorm_group_norm_backward_##SUFFIX(                                  \
      bnorm_layout layout, int64_t n, int64_t c, int64_t spatial, int64_t groups, const T* x, \
      const T* dy, T* dx, const T* weight, const T* save_mean, const T* save_rstd,             \
      T* dweight, T* dbias) {                                                                  \
    const char* op = "bnorm_group_norm_backward_" #SUFFIX;                                     \
    return guarded(op, [&] {                                                                   \
      bnorm::norm::group_norm_backward<T>(op, {layout, n, c, spatial}, groups, x, dy, dx,      \
                                          weight, save_mean, save_rstd, dweight, dbias);       \
    });                                                                                        \
  }                                                                                            \
  extern "C" bnorm_status bnorm_instance_norm_forward_training_##SUFFIX(                       \
      bnorm_layout layout, int64_t n, int64_t c, int64_t spatial, const T* x, T* y,           \
      const T* weight, const T* bias, double eps, double momentum, T* running_mean,            \
      T* running_var, T* save_mean, T* save_rstd) {                                            \
    const char* op = "bnorm_instance_norm_forward_training_" #SUFFIX;                          \
    return guarded(op, [&] {                                                                   \
      bnorm::norm::instance_norm_forward_training<T>(op, {layout, n, c, spatial}, x, y,        \
                                                     weight, bias, eps, momentum,              \
                                                     running_mean, running_var, save_mean,     \
                                                     save_rstd);                               \
    });                                                                                        \
  }                                                                                            \
  extern "C" bnorm_status bnorm_instance_norm_forward_inference_##SUFFIX(                      \
      bnorm_layout layout, int64_t n, int64_t c, int64_t spatial, const T* x, T* y,           \
      const T* weight, const T* bias, const T* running_mean, const T* running_var,             \
      double eps) {                                                                            \
    const char* op = "bnorm_instance_norm_forward_inference_" #SUFFIX;                         \
    return guarded(op, [&] {                                                                   \
      bnorm::norm::check_positive_eps(op, eps);                                                \
      bnorm::norm::forward_inference<T>(op, {layout, n, c, spatial}, x, y, weight, bias,       \
                                        running_mean, running_var, eps);                       \
    });                                                                                        \
  }                                                                                            \
  extern "C" bnorm_status bnorm_instance_norm_backward_##SUFFIX(                               \
      bnorm_layout layout, int64_t n, int64_t c, int64_t spatial, const T* x, const T* dy,    \
      T* dx, const T* weight, const T* save_mean, const T* save_rstd, T* dweight,              \
      T* dbias) {                                                                              \
    const char* op = "bnorm_instance_norm_backward_" #SUFFIX;                                  \
    return guarded(op, [&] {                                                                   \
      bnorm::norm::group_norm_backward<T>(op, {layout, n, c, spatial}, c, x, dy, dx, weight,   \
                                          save_mean, save_rstd, dweight, dbias);               \
    });                                                                                        \
  }                                                                                            \
  extern "C" bnorm_status bnorm_instance_norm_backward_inference_##SUFFIX(                     \
      bnorm_layout layout, int64_t n, int64_t c, int64_t spatial, const T* x, const T* dy,    \
      T* dx, const T* weight, const T* running_mean, const T* running_var, double eps,         \
      T* dweight, T* dbias) {                                                                  \
    const char* op = "bnorm_instance_norm_backward_inference_" #SUFFIX;                        \
    return guarded(op, [&] {                                                                   \
      bnorm::norm::check_positive_eps(op, eps);                                                \
      bnorm::norm::backward_inference<T>(op, {layout, n, c, spatial}, x, dy, dx, weight,       \
                                         running_mean, running_var, eps, dweight, dbias);      \
    });                                                                                        \
  }

BNORM_DEFINE_GROUP_NORM_C_API(float, f32)
BNORM_DEFINE_GROUP_NORM_C_API(double, f64)
#undef BNORM_DEFINE_GROUP_NORM_C_API
