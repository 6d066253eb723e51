// BatchNorm<T>: the stateful module over the functional API, following
// torch.nn.BatchNorm{1,2,3}d: batch statistics in training mode (or whenever there are
// no running statistics), running statistics in eval mode.
#include <bnorm/bnorm.hpp>
#include <bnorm/sync_batch_norm.hpp>

#include "api/allocation_errors.h"
#include "api/sync_calls.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <utility>

namespace bnorm {

namespace {
void check_momentum(const char* op, std::optional<double> momentum) {
  if (momentum && !(*momentum >= 0 && *momentum <= 1))
    throw Error(BNORM_ERROR_INVALID_VALUE,
                std::string(op) + ": momentum must be in [0, 1] (or std::nullopt for the "
                "cumulative average), got " + std::to_string(*momentum));
}

void check_eps(const char* op, double eps) {
  if (!std::isfinite(eps) || eps < 0)
    throw Error(BNORM_ERROR_INVALID_VALUE,
                std::string(op) + ": eps must be finite and >= 0, got " + std::to_string(eps));
}

// A span of use_state's: num_features values where the module has that state, else empty.
template <class T>
void check_state_span(const char* name, std::span<T> values, int64_t num_features,
                      bool present, const char* flag) {
  const auto want = static_cast<size_t>(present ? num_features : 0);
  if (values.size() != want)
    throw Error(BNORM_ERROR_SHAPE_MISMATCH,
                std::string("BatchNorm::use_state: ") + name + " has " +
                    std::to_string(values.size()) + " values, expected " +
                    (present ? "num_features = " + std::to_string(num_features)
                             : std::string("none (the module was built with ") + flag +
                                   " = false)"));
}
}  // namespace

template <class T>
void BatchNorm<T>::set_momentum(std::optional<double> momentum) {
  check_momentum("BatchNorm::set_momentum", momentum);
  options_.momentum = momentum;
}

template <class T>
void BatchNorm<T>::set_eps(double eps) {
  check_eps("BatchNorm::set_eps", eps);
  options_.eps = eps;
}

template <class T>
BatchNorm<T>::BatchNorm(int64_t num_features, BatchNormOptions options)
    : num_features_(num_features), options_(options) {
  if (num_features < 1)
    throw Error(BNORM_ERROR_INVALID_SHAPE,
                "BatchNorm: num_features must be >= 1, got " + std::to_string(num_features));
  check_eps("BatchNorm", options_.eps);
  check_momentum("BatchNorm", options_.momentum);
  const auto c = static_cast<size_t>(num_features);
  api::allocation_failures_as_errors("BatchNorm", [&] {
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
    save_mean_.resize(c);
    save_invstd_.resize(c);
  });
  reset_parameters();
}

template <class T>
void BatchNorm<T>::use_state(const BatchNormState<T>& state) {
  check_state_span("weight", state.weight, num_features_, options_.affine, "affine");
  check_state_span("bias", state.bias, num_features_, options_.affine, "affine");
  const bool track = options_.track_running_stats;
  check_state_span("running_mean", state.running_mean, num_features_, track,
                   "track_running_stats");
  check_state_span("running_var", state.running_var, num_features_, track,
                   "track_running_stats");
  if (track != (state.num_batches_tracked != nullptr))
    throw Error(track ? BNORM_ERROR_NULL_POINTER : BNORM_ERROR_INVALID_VALUE,
                std::string("BatchNorm::use_state: num_batches_tracked must ") +
                    (track ? "not be null (the module tracks running statistics)"
                           : "be null (the module was built with track_running_stats = false)"));
  borrowed_ = state;
}

template <class T>
void BatchNorm<T>::reset_running_stats() {
  std::ranges::fill(running_mean(), T(0));
  std::ranges::fill(running_var(), T(1));
  *counter() = 0;
}

template <class T>
void BatchNorm<T>::reset_parameters() {
  std::ranges::fill(weight(), T(1));
  std::ranges::fill(bias(), T(0));
  reset_running_stats();
}

template <class T>
void BatchNorm<T>::set_num_batches_tracked(int64_t count) {
  if (count < 0)
    throw Error(BNORM_ERROR_INVALID_VALUE,
                "BatchNorm: num_batches_tracked must be >= 0, got " + std::to_string(count));
  *counter() = count;
}

template <class T>
void BatchNorm<T>::forward(const TensorView<const T>& x, const TensorView<T>& y) {
  // SyncBN in training mode only: in eval mode PyTorch's SyncBatchNorm normalizes with
  // this process's batch when there are no running statistics.
  const bool synchronized = collective_ && training_;
  // A synchronized module's own refusals travel through the collective (sync_calls.h).
  std::optional<Error> refused;
  try {
    if (x.sizes.size() >= 2 && x.sizes[1] != num_features_)
      throw Error(BNORM_ERROR_SHAPE_MISMATCH,
                  "BatchNorm::forward: x has " + std::to_string(x.sizes[1]) +
                      " channels (dim 1), expected num_features = " +
                      std::to_string(num_features_));
    // Room for the sizes is made before anything is written (a failing allocation here
    // changes nothing), and only grows: a steady training loop allocates nothing.
    api::allocation_failures_as_errors("BatchNorm::forward",
                                       [&] { saved_sizes_.reserve(x.sizes.size()); });
  } catch (const Error& e) {
    if (!synchronized) throw;
    refused = e;
  }
  const bool batch_statistics = uses_batch_statistics();
  if (batch_statistics) {
    const bool update = updates_running_stats();
    // Without an update the momentum is unused (and the cumulative average has no count).
    const RunningStatsUpdate u{update ? options_.momentum : std::optional<double>(0.0),
                               options_.running_var, update ? counter() : nullptr};
    const std::span<T> rm = update ? running_mean() : std::span<T>();
    const std::span<T> rv = update ? running_var() : std::span<T>();
    if (synchronized)
      api::sync_forward<T>(*collective_, x, y, weight(), bias(), options_.eps, u, rm, rv,
                           save_mean_, save_invstd_, refused ? &*refused : nullptr);
    else
      batch_norm_forward_training<T>(x, y, weight(), bias(), options_.eps, u, rm, rv,
                                     save_mean_, save_invstd_);
  } else {
    batch_norm_forward_inference<T>(x, y, weight(), bias(), running_mean(), running_var(),
                                    options_.eps);
  }
  saved_ = synchronized       ? Saved::global_statistics
           : batch_statistics ? Saved::batch_statistics
                              : Saved::running_statistics;
  saved_sizes_.assign(x.sizes.begin(), x.sizes.end());
  saved_layout_ = x.layout;
}

template <class T>
void BatchNorm<T>::backward(const TensorView<const T>& x, const TensorView<const T>& dy, const TensorView<T>& dx) {
  // A synchronized module in training mode joins the backward's collective even when it
  // refuses the call, so that the other processes learn of it instead of waiting.
  const bool synchronized =
      saved_ == Saved::global_statistics || (saved_ == Saved::nothing && collective_ && training_);
  std::optional<Error> refused;
  try {
    if (saved_ == Saved::nothing)
      throw Error(BNORM_ERROR_INVALID_STATE, "BatchNorm::backward: called before any forward");
    if (x.sizes != saved_sizes_ || x.layout != saved_layout_)
      throw Error(BNORM_ERROR_SHAPE_MISMATCH,
                  "BatchNorm::backward: x must be the input of the last forward (same sizes "
                  "and layout)");
  } catch (const Error& e) {
    if (!synchronized) throw;
    refused = e;
  }
  const std::span<T> dweight = grad_weight_, dbias = grad_bias_;
  if (synchronized)
    api::sync_backward<T>(*collective_, x, dy, dx, weight(), save_mean_, save_invstd_, dweight,
                          dbias, refused ? &*refused : nullptr);
  else if (saved_ == Saved::batch_statistics)
    batch_norm_backward<T>(x, dy, dx, weight(), save_mean_, save_invstd_, dweight, dbias);
  else
    batch_norm_backward_inference<T>(x, dy, dx, weight(), running_mean(), running_var(),
                                     options_.eps, dweight, dbias);
}

template class BatchNorm<float>;
template class BatchNorm<double>;

}  // namespace bnorm
