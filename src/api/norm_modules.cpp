// The family's modules (norms.hpp) over the functional API, following torch.nn.LayerNorm,
// RMSNorm (PyTorch 2.4), GroupNorm and InstanceNorm{1,2,3}d: parameters, the statistics
// the last forward saved, and the gradients of the last backward.
#include <bnorm/bnorm.hpp>  // batch norm's fixed-statistics map (InstanceNorm in eval)
#include <bnorm/norms.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "api/allocation_errors.h"

namespace bnorm {
namespace {

void check_eps(const char* op, double eps) {
  if (!std::isfinite(eps) || eps <= 0)
    throw Error(BNORM_ERROR_INVALID_VALUE,
                std::string(op) + ": eps must be finite and > 0, got " + std::to_string(eps));
}

void check_momentum(const char* op, double momentum) {
  if (!(momentum >= 0 && momentum <= 1))
    throw Error(BNORM_ERROR_INVALID_VALUE,
                std::string(op) + ": momentum must be in [0, 1], got " + std::to_string(momentum));
}

void check_positive(const char* op, const char* name, int64_t value) {
  if (value < 1)
    throw Error(BNORM_ERROR_INVALID_SHAPE,
                std::string(op) + ": " + name + " must be >= 1, got " + std::to_string(value));
}

// prod(normalized_shape), every size >= 1 and at least one.
int64_t elements_of(const char* op, const std::vector<int64_t>& shape) {
  if (shape.empty())
    throw Error(BNORM_ERROR_INVALID_SHAPE,
                std::string(op) + ": normalized_shape must have at least one dimension, got []");
  int64_t count = 1;
  for (int64_t s : shape) {
    check_positive(op, "every size of normalized_shape", s);
    if (__builtin_mul_overflow(count, s, &count))
      throw Error(BNORM_ERROR_SIZE_OVERFLOW, std::string(op) + ": normalized_shape overflows int64_t");
  }
  return count;
}

// The product of sizes[begin, end), or 0 when one is < 1 or it overflows: the scratch a
// module sizes before the call, which then refuses such sizes with the full message.
size_t product_of(const std::vector<int64_t>& sizes, size_t begin, size_t end) {
  int64_t p = 1;
  for (size_t d = begin; d < end && d < sizes.size(); ++d)
    if (sizes[d] < 1 || __builtin_mul_overflow(p, sizes[d], &p)) return 0;
  return static_cast<size_t>(p);
}

// Leading sizes of x (the rows) before `k` trailing normalized dims: 1 when none.
size_t rows_before(const std::vector<int64_t>& sizes, size_t k) {
  return sizes.size() >= k ? product_of(sizes, 0, sizes.size() - k) : 0;
}

void check_backward(const char* op, bool saved, const std::vector<int64_t>& sizes,
                    const std::vector<int64_t>& saved_sizes) {
  if (!saved)
    throw Error(BNORM_ERROR_INVALID_STATE, std::string(op) + ": called before any forward");
  if (sizes != saved_sizes)
    throw Error(BNORM_ERROR_SHAPE_MISMATCH,
                std::string(op) + ": x must be the input of the last forward (same sizes and layout)");
}

template <class T>
std::span<T> span_or_empty(std::vector<T>& v, bool given) {
  return given ? std::span<T>(v) : std::span<T>();
}

}  // namespace

// ---- LayerNorm ---------------------------------------------------------------------

template <class T>
void LayerNorm<T>::set_eps(double eps) {
  check_eps("LayerNorm::set_eps", eps);
  options_.eps = eps;
}

template <class T>
LayerNorm<T>::LayerNorm(std::vector<int64_t> normalized_shape, LayerNormOptions options)
    : normalized_shape_(std::move(normalized_shape)), options_(options) {
  const int64_t count = elements_of("LayerNorm", normalized_shape_);
  check_eps("LayerNorm", options_.eps);
  api::allocation_failures_as_errors("LayerNorm", [&] {
    if (options_.elementwise_affine) {
      weight_.resize(static_cast<size_t>(count));
      grad_weight_.assign(static_cast<size_t>(count), T(0));
      if (options_.bias) {
        bias_.resize(static_cast<size_t>(count));
        grad_bias_.assign(static_cast<size_t>(count), T(0));
      }
    }
  });
  reset_parameters();
}

template <class T>
void LayerNorm<T>::reset_parameters() {
  std::fill(weight_.begin(), weight_.end(), T(1));
  std::fill(bias_.begin(), bias_.end(), T(0));
}

template <class T>
void LayerNorm<T>::forward(const TensorView<const T>& x, const TensorView<T>& y) {
  const char* op = "LayerNorm::forward";
  const auto rows = rows_before(x.sizes, normalized_shape_.size());
  api::allocation_failures_as_errors(op, [&] {
    saved_sizes_.reserve(x.sizes.size());
    if (save_mean_.size() < rows) save_mean_.resize(rows), save_rstd_.resize(rows);
  });
  layer_norm_forward<T>(x, y, normalized_shape_, weight_, bias_, options_.eps,
                        std::span<T>(save_mean_.data(), rows), std::span<T>(save_rstd_.data(), rows));
  saved_ = true;
  saved_sizes_.assign(x.sizes.begin(), x.sizes.end());
}

template <class T>
void LayerNorm<T>::backward(const TensorView<const T>& x, const TensorView<const T>& dy,
                            const TensorView<T>& dx) {
  check_backward("LayerNorm::backward", saved_, x.sizes, saved_sizes_);
  const auto rows = rows_before(x.sizes, normalized_shape_.size());
  layer_norm_backward<T>(x, dy, dx, normalized_shape_, weight_,
                         std::span<const T>(save_mean_.data(), rows),
                         std::span<const T>(save_rstd_.data(), rows), grad_weight_, grad_bias_);
}

// ---- RMSNorm -----------------------------------------------------------------------

template <class T>
void RMSNorm<T>::set_eps(std::optional<double> eps) {
  if (eps) check_eps("RMSNorm::set_eps", *eps);
  options_.eps = eps;
}

template <class T>
RMSNorm<T>::RMSNorm(std::vector<int64_t> normalized_shape, RMSNormOptions options)
    : normalized_shape_(std::move(normalized_shape)), options_(options) {
  const int64_t count = elements_of("RMSNorm", normalized_shape_);
  if (options_.eps) check_eps("RMSNorm", *options_.eps);
  api::allocation_failures_as_errors("RMSNorm", [&] {
    if (options_.elementwise_affine) {
      weight_.resize(static_cast<size_t>(count));
      grad_weight_.assign(static_cast<size_t>(count), T(0));
    }
  });
  reset_parameters();
}

template <class T>
void RMSNorm<T>::reset_parameters() {
  std::fill(weight_.begin(), weight_.end(), T(1));
}

template <class T>
void RMSNorm<T>::forward(const TensorView<const T>& x, const TensorView<T>& y) {
  const char* op = "RMSNorm::forward";
  const auto rows = rows_before(x.sizes, normalized_shape_.size());
  api::allocation_failures_as_errors(op, [&] {
    saved_sizes_.reserve(x.sizes.size());
    if (save_rstd_.size() < rows) save_rstd_.resize(rows);
  });
  rms_norm_forward<T>(x, y, normalized_shape_, weight_, options_.eps,
                      std::span<T>(save_rstd_.data(), rows));
  saved_ = true;
  saved_sizes_.assign(x.sizes.begin(), x.sizes.end());
}

template <class T>
void RMSNorm<T>::backward(const TensorView<const T>& x, const TensorView<const T>& dy,
                          const TensorView<T>& dx) {
  check_backward("RMSNorm::backward", saved_, x.sizes, saved_sizes_);
  const auto rows = rows_before(x.sizes, normalized_shape_.size());
  rms_norm_backward<T>(x, dy, dx, normalized_shape_, weight_,
                       std::span<const T>(save_rstd_.data(), rows), grad_weight_);
}

// ---- GroupNorm ---------------------------------------------------------------------

template <class T>
void GroupNorm<T>::set_eps(double eps) {
  check_eps("GroupNorm::set_eps", eps);
  options_.eps = eps;
}

template <class T>
GroupNorm<T>::GroupNorm(int64_t num_groups, int64_t num_channels, GroupNormOptions options)
    : num_groups_(num_groups), num_channels_(num_channels), options_(options) {
  check_positive("GroupNorm", "num_groups", num_groups);
  check_positive("GroupNorm", "num_channels", num_channels);
  if (num_channels % num_groups != 0)
    throw Error(BNORM_ERROR_INVALID_VALUE,
                "GroupNorm: num_channels must be divisible by num_groups, got num_channels = " +
                    std::to_string(num_channels) + " and num_groups = " + std::to_string(num_groups));
  check_eps("GroupNorm", options_.eps);
  api::allocation_failures_as_errors("GroupNorm", [&] {
    if (options_.affine) {
      const auto c = static_cast<size_t>(num_channels);
      weight_.resize(c);
      bias_.resize(c);
      grad_weight_.assign(c, T(0));
      grad_bias_.assign(c, T(0));
    }
  });
  reset_parameters();
}

template <class T>
void GroupNorm<T>::reset_parameters() {
  std::fill(weight_.begin(), weight_.end(), T(1));
  std::fill(bias_.begin(), bias_.end(), T(0));
}

template <class T>
void GroupNorm<T>::forward(const TensorView<const T>& x, const TensorView<T>& y) {
  const char* op = "GroupNorm::forward";
  if (x.sizes.size() >= 2 && x.sizes[1] != num_channels_)
    throw Error(BNORM_ERROR_SHAPE_MISMATCH,
                std::string(op) + ": x has " + std::to_string(x.sizes[1]) +
                    " channels (dim 1), expected num_channels = " + std::to_string(num_channels_));
  const size_t groups = product_of(x.sizes, 0, 1) * static_cast<size_t>(num_groups_);
  api::allocation_failures_as_errors(op, [&] {
    saved_sizes_.reserve(x.sizes.size());
    if (save_mean_.size() < groups) save_mean_.resize(groups), save_rstd_.resize(groups);
  });
  group_norm_forward<T>(x, y, num_groups_, weight_, bias_, options_.eps,
                        std::span<T>(save_mean_.data(), groups),
                        std::span<T>(save_rstd_.data(), groups));
  saved_ = true;
  saved_sizes_.assign(x.sizes.begin(), x.sizes.end());
  saved_layout_ = x.layout;
}

template <class T>
void GroupNorm<T>::backward(const TensorView<const T>& x, const TensorView<const T>& dy,
                            const TensorView<T>& dx) {
  check_backward("GroupNorm::backward", saved_ && x.layout == saved_layout_, x.sizes,
                 saved_sizes_);
  const auto groups = static_cast<size_t>(x.sizes[0]) * static_cast<size_t>(num_groups_);
  group_norm_backward<T>(x, dy, dx, num_groups_, weight_,
                         std::span<const T>(save_mean_.data(), groups),
                         std::span<const T>(save_rstd_.data(), groups), grad_weight_, grad_bias_);
}

// ---- InstanceNorm ------------------------------------------------------------------

template <class T>
void InstanceNorm<T>::set_eps(double eps) {
  check_eps("InstanceNorm::set_eps", eps);
  options_.eps = eps;
}

template <class T>
void InstanceNorm<T>::set_momentum(double momentum) {
  check_momentum("InstanceNorm::set_momentum", momentum);
  options_.momentum = momentum;
}

template <class T>
InstanceNorm<T>::InstanceNorm(int64_t num_features, InstanceNormOptions options)
    : num_features_(num_features), options_(options) {
  check_positive("InstanceNorm", "num_features", num_features);
  check_eps("InstanceNorm", options_.eps);
  check_momentum("InstanceNorm", options_.momentum);
  const auto c = static_cast<size_t>(num_features);
  api::allocation_failures_as_errors("InstanceNorm", [&] {
    if (options_.affine) {
      weight_.resize(c);
      bias_.resize(c);
      grad_weight_.assign(c, T(0));
      grad_bias_.assign(c, T(0));
    }
    if (options_.track_running_stats) {
      running_mean_.resize(c);
      running_var_.resize(c);
    }
  });
  reset_parameters();
}

template <class T>
void InstanceNorm<T>::reset_running_stats() {
  std::fill(running_mean_.begin(), running_mean_.end(), T(0));
  std::fill(running_var_.begin(), running_var_.end(), T(1));
}

template <class T>
void InstanceNorm<T>::reset_parameters() {
  std::fill(weight_.begin(), weight_.end(), T(1));
  std::fill(bias_.begin(), bias_.end(), T(0));
  reset_running_stats();
}

template <class T>
void InstanceNorm<T>::forward(const TensorView<const T>& x, const TensorView<T>& y) {
  const char* op = "InstanceNorm::forward";
  if (x.sizes.size() >= 2 && x.sizes[1] != num_features_)
    throw Error(BNORM_ERROR_SHAPE_MISMATCH,
                std::string(op) + ": x has " + std::to_string(x.sizes[1]) +
                    " channels (dim 1), expected num_features = " + std::to_string(num_features_));
  const bool input_stats = training_ || !options_.track_running_stats;
  const size_t instances = x.sizes.size() >= 2 ? product_of(x.sizes, 0, 2) : 0;
  api::allocation_failures_as_errors(op, [&] {
    saved_sizes_.reserve(x.sizes.size());
    if (input_stats && save_mean_.size() < instances)
      save_mean_.resize(instances), save_rstd_.resize(instances);
  });
  if (input_stats) {
    const bool update = training_ && options_.track_running_stats;
    instance_norm_forward_training<T>(x, y, weight_, bias_, options_.eps, options_.momentum,
                                      span_or_empty(running_mean_, update),
                                      span_or_empty(running_var_, update),
                                      std::span<T>(save_mean_.data(), instances),
                                      std::span<T>(save_rstd_.data(), instances));
  } else {
    // Running statistics: batch norm's fixed per-channel map (eps > 0 checked above).
    batch_norm_forward_inference<T>(x, y, weight_, bias_, running_mean_, running_var_,
                                    options_.eps);
  }
  saved_ = input_stats ? Saved::instance_statistics : Saved::running_statistics;
  saved_sizes_.assign(x.sizes.begin(), x.sizes.end());
  saved_layout_ = x.layout;
}

template <class T>
void InstanceNorm<T>::backward(const TensorView<const T>& x, const TensorView<const T>& dy,
                               const TensorView<T>& dx) {
  check_backward("InstanceNorm::backward", saved_ != Saved::nothing && x.layout == saved_layout_,
                 x.sizes, saved_sizes_);
  if (saved_ == Saved::running_statistics) {
    batch_norm_backward_inference<T>(x, dy, dx, weight_, running_mean_, running_var_,
                                     options_.eps, grad_weight_, grad_bias_);
    return;
  }
  const auto instances = static_cast<size_t>(x.sizes[0]) * static_cast<size_t>(x.sizes[1]);
  group_norm_backward<T>(x, dy, dx, num_features_, weight_,
                         std::span<const T>(save_mean_.data(), instances),
                         std::span<const T>(save_rstd_.data(), instances), grad_weight_,
                         grad_bias_);
}

template class LayerNorm<float>;
template class LayerNorm<double>;
template class RMSNorm<float>;
template class RMSNorm<double>;
template class GroupNorm<float>;
template class GroupNorm<double>;
template class InstanceNorm<float>;
template class InstanceNorm<double>;

}  // namespace bnorm
