// The C++ functional API: checks what the flat C API cannot see (ranks, that y/dy/dx
// match x, per-channel span lengths), then runs the front-end.
#include <bnorm/bnorm.hpp>

#include <sstream>
#include <string>

#include "api/allocation_errors.h"
#include "api/tensor_checks.h"
#include "norm/batch_norm.h"

namespace bnorm {
namespace {

using api::c_update;
using api::check_same_shape;
using api::per_channel;

template <class T>
norm::Problem problem_of(const char* op, const TensorView<const T>& x) {
  return norm::problem_from_sizes(op, "x", x.sizes, x.layout);
}

// nullptr for an empty mask, else the data after checking its length: one bit per value.
template <class B>
B* relu_mask_of(const char* op, std::span<B> mask, const norm::Problem& p) {
  if (mask.empty()) return nullptr;
  const int64_t bytes = bnorm_relu_mask_bytes(p.n, p.c, p.spatial);
  if (static_cast<int64_t>(mask.size()) != bytes)
    throw Error(BNORM_ERROR_SHAPE_MISMATCH,
                std::string(op) + ": relu_mask has " + std::to_string(mask.size()) +
                    " bytes, expected " + std::to_string(bytes) + " (one bit per value of x)");
  return mask.data();
}

// The fused backward's gate: y (checked against x) or the mask.
template <class T>
norm::ReluGate<T> gate_of(const char* op, const TensorView<const T>& y,
                          std::span<const uint8_t> relu_mask, const TensorView<const T>& x,
                          const norm::Problem& p) {
  if (y.data) check_same_shape(op, "y", y, x);
  return norm::ReluGate<T>{y.data, relu_mask_of(op, relu_mask, p)};
}

}  // namespace

template <class T>
void batch_norm_forward_training(const TensorView<const T>& x, const TensorView<T>& y, std::span<const T> weight,
                                 std::span<const T> bias, double eps,
                                 const RunningStatsUpdate& update, std::span<T> running_mean,
                                 std::span<T> running_var, std::span<T> save_mean,
                                 std::span<T> save_invstd) {
  const char* op = "batch_norm_forward_training";
  const norm::Problem p = problem_of(op, x);
  check_same_shape(op, "y", y, x);
  const bnorm_running_stats_update u = c_update(op, update);
  api::allocation_failures_as_errors(op, [&] {
    norm::forward_training<T>(op, p, x.data, y.data, per_channel(op, "weight", weight, p.c),
                              per_channel(op, "bias", bias, p.c), eps, u,
                              per_channel(op, "running_mean", running_mean, p.c),
                              per_channel(op, "running_var", running_var, p.c),
                              per_channel(op, "save_mean", save_mean, p.c),
                              per_channel(op, "save_invstd", save_invstd, p.c));
  });
}

template <class T>
void batch_norm_forward_inference(const TensorView<const T>& x, const TensorView<T>& y,
                                  std::span<const T> weight, std::span<const T> bias,
                                  std::span<const T> running_mean,
                                  std::span<const T> running_var, double eps) {
  const char* op = "batch_norm_forward_inference";
  const norm::Problem p = problem_of(op, x);
  check_same_shape(op, "y", y, x);
  api::allocation_failures_as_errors(op, [&] {
    norm::forward_inference<T>(op, p, x.data, y.data, per_channel(op, "weight", weight, p.c),
                               per_channel(op, "bias", bias, p.c),
                               per_channel(op, "running_mean", running_mean, p.c),
                               per_channel(op, "running_var", running_var, p.c), eps);
  });
}

template <class T>
void batch_norm_backward(const TensorView<const T>& x, const TensorView<const T>& dy, const TensorView<T>& dx,
                         std::span<const T> weight, std::span<const T> save_mean,
                         std::span<const T> save_invstd, std::span<T> dweight,
                         std::span<T> dbias) {
  const char* op = "batch_norm_backward";
  const norm::Problem p = problem_of(op, x);
  check_same_shape(op, "dy", dy, x);
  if (dx.data) check_same_shape(op, "dx", dx, x);
  api::allocation_failures_as_errors(op, [&] {
    norm::backward<T>(op, p, x.data, dy.data, dx.data, per_channel(op, "weight", weight, p.c),
                      per_channel(op, "save_mean", save_mean, p.c),
                      per_channel(op, "save_invstd", save_invstd, p.c),
                      per_channel(op, "dweight", dweight, p.c), per_channel(op, "dbias", dbias, p.c));
  });
}

template <class T>
void batch_norm_backward_inference(const TensorView<const T>& x, const TensorView<const T>& dy,
                                   const TensorView<T>& dx, std::span<const T> weight,
                                   std::span<const T> running_mean,
                                   std::span<const T> running_var, double eps,
                                   std::span<T> dweight, std::span<T> dbias) {
  const char* op = "batch_norm_backward_inference";
  const norm::Problem p = problem_of(op, x);
  check_same_shape(op, "dy", dy, x);
  if (dx.data) check_same_shape(op, "dx", dx, x);
  api::allocation_failures_as_errors(op, [&] {
    norm::backward_inference<T>(op, p, x.data, dy.data, dx.data,
                                per_channel(op, "weight", weight, p.c),
                                per_channel(op, "running_mean", running_mean, p.c),
                                per_channel(op, "running_var", running_var, p.c), eps,
                                per_channel(op, "dweight", dweight, p.c),
                                per_channel(op, "dbias", dbias, p.c));
  });
}

template <class T>
void batch_norm_relu_forward_training(const TensorView<const T>& x, const TensorView<T>& y,
                                      std::span<const T> weight, std::span<const T> bias,
                                      double eps, const RunningStatsUpdate& update,
                                      std::span<T> running_mean, std::span<T> running_var,
                                      std::span<T> save_mean, std::span<T> save_invstd,
                                      std::span<uint8_t> relu_mask) {
  const char* op = "batch_norm_relu_forward_training";
  const norm::Problem p = problem_of(op, x);
  check_same_shape(op, "y", y, x);
  const bnorm_running_stats_update u = c_update(op, update);
  const norm::ReluOutput relu{true, relu_mask_of(op, relu_mask, p)};
  api::allocation_failures_as_errors(op, [&] {
    norm::forward_training<T>(op, p, x.data, y.data, per_channel(op, "weight", weight, p.c),
                              per_channel(op, "bias", bias, p.c), eps, u,
                              per_channel(op, "running_mean", running_mean, p.c),
                              per_channel(op, "running_var", running_var, p.c),
                              per_channel(op, "save_mean", save_mean, p.c),
                              per_channel(op, "save_invstd", save_invstd, p.c), relu);
  });
}

template <class T>
void batch_norm_relu_forward_inference(const TensorView<const T>& x, const TensorView<T>& y,
                                       std::span<const T> weight, std::span<const T> bias,
                                       std::span<const T> running_mean,
                                       std::span<const T> running_var, double eps,
                                       std::span<uint8_t> relu_mask) {
  const char* op = "batch_norm_relu_forward_inference";
  const norm::Problem p = problem_of(op, x);
  check_same_shape(op, "y", y, x);
  const norm::ReluOutput relu{true, relu_mask_of(op, relu_mask, p)};
  api::allocation_failures_as_errors(op, [&] {
    norm::forward_inference<T>(op, p, x.data, y.data, per_channel(op, "weight", weight, p.c),
                               per_channel(op, "bias", bias, p.c),
                               per_channel(op, "running_mean", running_mean, p.c),
                               per_channel(op, "running_var", running_var, p.c), eps, relu);
  });
}

template <class T>
void batch_norm_relu_backward(const TensorView<const T>& x, const TensorView<const T>& y,
                              std::span<const uint8_t> relu_mask, const TensorView<const T>& dy,
                              const TensorView<T>& dx, std::span<const T> weight,
                              std::span<const T> save_mean, std::span<const T> save_invstd,
                              std::span<T> dweight, std::span<T> dbias) {
  const char* op = "batch_norm_relu_backward";
  const norm::Problem p = problem_of(op, x);
  check_same_shape(op, "dy", dy, x);
  if (dx.data) check_same_shape(op, "dx", dx, x);
  const norm::ReluGate<T> gate = gate_of(op, y, relu_mask, x, p);
  api::allocation_failures_as_errors(op, [&] {
    norm::backward<T>(op, p, x.data, dy.data, dx.data, per_channel(op, "weight", weight, p.c),
                      per_channel(op, "save_mean", save_mean, p.c),
                      per_channel(op, "save_invstd", save_invstd, p.c),
                      per_channel(op, "dweight", dweight, p.c), per_channel(op, "dbias", dbias, p.c),
                      true, gate);
  });
}

template <class T>
void batch_norm_relu_backward_inference(const TensorView<const T>& x,
                                        const TensorView<const T>& y,
                                        std::span<const uint8_t> relu_mask,
                                        const TensorView<const T>& dy, const TensorView<T>& dx,
                                        std::span<const T> weight,
                                        std::span<const T> running_mean,
                                        std::span<const T> running_var, double eps,
                                        std::span<T> dweight, std::span<T> dbias) {
  const char* op = "batch_norm_relu_backward_inference";
  const norm::Problem p = problem_of(op, x);
  check_same_shape(op, "dy", dy, x);
  if (dx.data) check_same_shape(op, "dx", dx, x);
  const norm::ReluGate<T> gate = gate_of(op, y, relu_mask, x, p);
  api::allocation_failures_as_errors(op, [&] {
    norm::backward_inference<T>(op, p, x.data, dy.data, dx.data,
                                per_channel(op, "weight", weight, p.c),
                                per_channel(op, "running_mean", running_mean, p.c),
                                per_channel(op, "running_var", running_var, p.c), eps,
                                per_channel(op, "dweight", dweight, p.c),
                                per_channel(op, "dbias", dbias, p.c), true, gate);
  });
}

// The public API's instantiations are exported from libbnorm.so (bnorm/export.h).
#define BNORM_INSTANTIATE(T)                                                                  \
  template BNORM_API void batch_norm_forward_training<T>(                                     \
      const TensorView<const T>&, const TensorView<T>&, std::span<const T>, std::span<const T>, \
      double, const RunningStatsUpdate&, std::span<T>, std::span<T>, std::span<T>,             \
      std::span<T>);                                                                          \
  template BNORM_API void batch_norm_forward_inference<T>(                                    \
      const TensorView<const T>&, const TensorView<T>&, std::span<const T>, std::span<const T>, \
      std::span<const T>, std::span<const T>, double);                                        \
  template BNORM_API void batch_norm_backward<T>(const TensorView<const T>&, const TensorView<const T>&, \
                                       const TensorView<T>&, std::span<const T>,              \
                                       std::span<const T>, std::span<const T>, std::span<T>,  \
                                       std::span<T>);                                         \
  template BNORM_API void batch_norm_backward_inference<T>(                                   \
      const TensorView<const T>&, const TensorView<const T>&, const TensorView<T>&,           \
      std::span<const T>, std::span<const T>, std::span<const T>, double, std::span<T>,       \
      std::span<T>);                                                                          \
  template BNORM_API void batch_norm_relu_forward_training<T>(                                \
      const TensorView<const T>&, const TensorView<T>&, std::span<const T>, std::span<const T>, \
      double, const RunningStatsUpdate&, std::span<T>, std::span<T>, std::span<T>,             \
      std::span<T>, std::span<uint8_t>);                                                      \
  template BNORM_API void batch_norm_relu_forward_inference<T>(                               \
      const TensorView<const T>&, const TensorView<T>&, std::span<const T>, std::span<const T>, \
      std::span<const T>, std::span<const T>, double, std::span<uint8_t>);                    \
  template BNORM_API void batch_norm_relu_backward<T>(                                        \
      const TensorView<const T>&, const TensorView<const T>&, std::span<const uint8_t>,       \
      const TensorView<const T>&, const TensorView<T>&, std::span<const T>,                   \
      std::span<const T>, std::span<const T>, std::span<T>, std::span<T>);                    \
  template BNORM_API void batch_norm_relu_backward_inference<T>(                              \
      const TensorView<const T>&, const TensorView<const T>&, std::span<const uint8_t>,       \
      const TensorView<const T>&, const TensorView<T>&, std::span<const T>,                   \
      std::span<const T>, std::span<const T>, double, std::span<T>, std::span<T>);
BNORM_INSTANTIATE(float)
BNORM_INSTANTIATE(double)
#undef BNORM_INSTANTIATE

}  // namespace bnorm
