// The family's C++ functional API (norms.hpp): checks what the flat front-ends cannot see
// (normalized_shape against x's sizes, that y/dy/dx match x, span lengths), then runs the
// front-ends (norm/layer_norm.h, norm/group_norm.h).
#include <bnorm/norms.hpp>

#include <limits>
#include <string>

#include "api/allocation_errors.h"
#include "api/tensor_checks.h"
#include "norm/group_norm.h"
#include "norm/layer_norm.h"

namespace bnorm {
namespace {

using api::check_same_shape;
using api::per_channel;
using api::span_of;

// x as (rows, cols): cols = prod(normalized_shape), which x's sizes must end with.
struct Rows {
  int64_t rows, cols;
};

template <class T>
Rows rows_of(const char* op, const TensorView<const T>& x,
             std::span<const int64_t> normalized_shape) {
  auto shape_error = [&](const std::string& what) {
    throw Error(BNORM_ERROR_INVALID_SHAPE, std::string(op) + ": " + what);
  };
  if (normalized_shape.empty())
    shape_error("normalized_shape must have at least one dimension, got []");
  if (x.layout != Layout::channels_first)
    shape_error("x must be row-major (layout channels_first): the normalized dims are the "
                "trailing ones in memory, got " + api::describe(x.sizes, x.layout));
  const size_t k = normalized_shape.size();
  bool ends_with = x.sizes.size() >= k;
  for (size_t d = 0; ends_with && d < k; ++d)
    ends_with = x.sizes[x.sizes.size() - k + d] == normalized_shape[d];
  if (!ends_with) {
    std::string shape = "[";
    for (size_t d = 0; d < k; ++d) shape += (d ? ", " : "") + std::to_string(normalized_shape[d]);
    shape_error("x's sizes must end with normalized_shape " + shape + "], got " +
                api::describe(x.sizes, x.layout));
  }
  Rows r{1, 1};
  for (size_t d = 0; d < x.sizes.size(); ++d) {
    if (x.sizes[d] < 1)
      shape_error("x size " + std::to_string(x.sizes[d]) + " at dim " + std::to_string(d) +
                  " must be >= 1 (no zero-size dims)");
    int64_t& product = d < x.sizes.size() - k ? r.rows : r.cols;
    if (__builtin_mul_overflow(product, x.sizes[d], &product))
      throw Error(BNORM_ERROR_SIZE_OVERFLOW, std::string(op) + ": x has more values than int64_t counts");
  }
  return r;
}

// n * groups (or n * c), or a value no span can have when it overflows.
int64_t product_or_max(int64_t a, int64_t b) {
  int64_t p = 0;
  return __builtin_mul_overflow(a, b, &p) ? std::numeric_limits<int64_t>::max() : p;
}

template <class T>
double rms_eps(std::optional<double> eps) {
  return eps ? *eps : static_cast<double>(std::numeric_limits<T>::epsilon());
}

}  // namespace

template <class T>
void layer_norm_forward(const TensorView<const T>& x, const TensorView<T>& y,
                        std::span<const int64_t> normalized_shape, std::span<const T> weight,
                        std::span<const T> bias, double eps, std::span<T> save_mean,
                        std::span<T> save_rstd) {
  const char* op = "layer_norm_forward";
  const Rows r = rows_of(op, x, normalized_shape);
  check_same_shape(op, "y", y, x);
  api::allocation_failures_as_errors(op, [&] {
    norm::layer_norm_forward<T>(op, r.rows, r.cols, x.data, y.data,
                                span_of(op, "weight", weight, r.cols, "normalized element"),
                                span_of(op, "bias", bias, r.cols, "normalized element"), eps,
                                span_of(op, "save_mean", save_mean, r.rows, "row"),
                                span_of(op, "save_rstd", save_rstd, r.rows, "row"));
  });
}

template <class T>
void layer_norm_backward(const TensorView<const T>& x, const TensorView<const T>& dy,
                         const TensorView<T>& dx, std::span<const int64_t> normalized_shape,
                         std::span<const T> weight, std::span<const T> save_mean,
                         std::span<const T> save_rstd, std::span<T> dweight,
                         std::span<T> dbias) {
  const char* op = "layer_norm_backward";
  const Rows r = rows_of(op, x, normalized_shape);
  check_same_shape(op, "dy", dy, x);
  if (dx.data) check_same_shape(op, "dx", dx, x);
  api::allocation_failures_as_errors(op, [&] {
    norm::layer_norm_backward<T>(op, r.rows, r.cols, x.data, dy.data, dx.data,
                                 span_of(op, "weight", weight, r.cols, "normalized element"),
                                 span_of(op, "save_mean", save_mean, r.rows, "row"),
                                 span_of(op, "save_rstd", save_rstd, r.rows, "row"),
                                 span_of(op, "dweight", dweight, r.cols, "normalized element"),
                                 span_of(op, "dbias", dbias, r.cols, "normalized element"));
  });
}

template <class T>
void rms_norm_forward(const TensorView<const T>& x, const TensorView<T>& y,
                      std::span<const int64_t> normalized_shape, std::span<const T> weight,
                      std::optional<double> eps, std::span<T> save_rstd) {
  const char* op = "rms_norm_forward";
  const Rows r = rows_of(op, x, normalized_shape);
  check_same_shape(op, "y", y, x);
  api::allocation_failures_as_errors(op, [&] {
    norm::rms_norm_forward<T>(op, r.rows, r.cols, x.data, y.data,
                              span_of(op, "weight", weight, r.cols, "normalized element"),
                              rms_eps<T>(eps), span_of(op, "save_rstd", save_rstd, r.rows, "row"));
  });
}

template <class T>
void rms_norm_backward(const TensorView<const T>& x, const TensorView<const T>& dy,
                       const TensorView<T>& dx, std::span<const int64_t> normalized_shape,
                       std::span<const T> weight, std::span<const T> save_rstd,
                       std::span<T> dweight) {
  const char* op = "rms_norm_backward";
  const Rows r = rows_of(op, x, normalized_shape);
  check_same_shape(op, "dy", dy, x);
  if (dx.data) check_same_shape(op, "dx", dx, x);
  api::allocation_failures_as_errors(op, [&] {
    norm::rms_norm_backward<T>(op, r.rows, r.cols, x.data, dy.data, dx.data,
                               span_of(op, "weight", weight, r.cols, "normalized element"),
                               span_of(op, "save_rstd", save_rstd, r.rows, "row"),
                               span_of(op, "dweight", dweight, r.cols, "normalized element"));
  });
}

template <class T>
void group_norm_forward(const TensorView<const T>& x, const TensorView<T>& y, int64_t groups,
                        std::span<const T> weight, std::span<const T> bias, double eps,
                        std::span<T> save_mean, std::span<T> save_rstd) {
  const char* op = "group_norm_forward";
  const norm::Problem p = norm::problem_from_sizes(op, "x", x.sizes, x.layout);
  check_same_shape(op, "y", y, x);
  const int64_t ng = product_or_max(p.n, groups);
  api::allocation_failures_as_errors(op, [&] {
    norm::group_norm_forward<T>(op, p, groups, x.data, y.data,
                                per_channel(op, "weight", weight, p.c),
                                per_channel(op, "bias", bias, p.c), eps,
                                span_of(op, "save_mean", save_mean, ng, "(sample, group)"),
                                span_of(op, "save_rstd", save_rstd, ng, "(sample, group)"));
  });
}

template <class T>
void group_norm_backward(const TensorView<const T>& x, const TensorView<const T>& dy,
                         const TensorView<T>& dx, int64_t groups, std::span<const T> weight,
                         std::span<const T> save_mean, std::span<const T> save_rstd,
                         std::span<T> dweight, std::span<T> dbias) {
  const char* op = "group_norm_backward";
  const norm::Problem p = norm::problem_from_sizes(op, "x", x.sizes, x.layout);
  check_same_shape(op, "dy", dy, x);
  if (dx.data) check_same_shape(op, "dx", dx, x);
  const int64_t ng = product_or_max(p.n, groups);
  api::allocation_failures_as_errors(op, [&] {
    norm::group_norm_backward<T>(op, p, groups, x.data, dy.data, dx.data,
                                 per_channel(op, "weight", weight, p.c),
                                 span_of(op, "save_mean", save_mean, ng, "(sample, group)"),
                                 span_of(op, "save_rstd", save_rstd, ng, "(sample, group)"),
                                 per_channel(op, "dweight", dweight, p.c),
                                 per_channel(op, "dbias", dbias, p.c));
  });
}

template <class T>
void instance_norm_forward_training(const TensorView<const T>& x, const TensorView<T>& y,
                                    std::span<const T> weight, std::span<const T> bias,
                                    double eps, double momentum, std::span<T> running_mean,
                                    std::span<T> running_var, std::span<T> save_mean,
                                    std::span<T> save_rstd) {
  const char* op = "instance_norm_forward_training";
  const norm::Problem p = norm::problem_from_sizes(op, "x", x.sizes, x.layout);
  check_same_shape(op, "y", y, x);
  const int64_t nc = product_or_max(p.n, p.c);
  api::allocation_failures_as_errors(op, [&] {
    norm::instance_norm_forward_training<T>(
        op, p, x.data, y.data, per_channel(op, "weight", weight, p.c),
        per_channel(op, "bias", bias, p.c), eps, momentum,
        per_channel(op, "running_mean", running_mean, p.c),
        per_channel(op, "running_var", running_var, p.c),
        span_of(op, "save_mean", save_mean, nc, "(sample, channel)"),
        span_of(op, "save_rstd", save_rstd, nc, "(sample, channel)"));
  });
}

// The public API's instantiations are exported from libbnorm.so (bnorm/export.h).
#define BNORM_INSTANTIATE(T)                                                                  \
  template BNORM_API void layer_norm_forward<T>(const TensorView<const T>&, const TensorView<T>&, \
                                      std::span<const int64_t>, std::span<const T>,           \
                                      std::span<const T>, double, std::span<T>, std::span<T>); \
  template BNORM_API void layer_norm_backward<T>(const TensorView<const T>&, const TensorView<const T>&, \
                                       const TensorView<T>&, std::span<const int64_t>,        \
                                       std::span<const T>, std::span<const T>,                \
                                       std::span<const T>, std::span<T>, std::span<T>);       \
  template BNORM_API void rms_norm_forward<T>(const TensorView<const T>&, const TensorView<T>&, \
                                    std::span<const int64_t>, std::span<const T>,             \
                                    std::optional<double>, std::span<T>);                     \
  template BNORM_API void rms_norm_backward<T>(const TensorView<const T>&, const TensorView<const T>&, \
                                     const TensorView<T>&, std::span<const int64_t>,          \
                                     std::span<const T>, std::span<const T>, std::span<T>);   \
  template BNORM_API void group_norm_forward<T>(const TensorView<const T>&, const TensorView<T>&, \
                                      int64_t, std::span<const T>, std::span<const T>, double, \
                                      std::span<T>, std::span<T>);                            \
  template BNORM_API void group_norm_backward<T>(const TensorView<const T>&, const TensorView<const T>&, \
                                       const TensorView<T>&, int64_t, std::span<const T>,     \
                                       std::span<const T>, std::span<const T>, std::span<T>,  \
                                       std::span<T>);                                         \
  template BNORM_API void instance_norm_forward_training<T>(                                  \
      const TensorView<const T>&, const TensorView<T>&, std::span<const T>,                   \
      std::span<const T>, double, double, std::span<T>, std::span<T>, std::span<T>,           \
      std::span<T>);
BNORM_INSTANTIATE(float)
BNORM_INSTANTIATE(double)
#undef BNORM_INSTANTIATE

}  // namespace bnorm
