// bnorm: the normalization family beside batch norm, C++ API. <bnorm/bnorm.hpp> includes
// this header; TensorView, Layout and Error are tensor_view.hpp's and error.hpp's.
//
// What each normalizes over (docs/normalizations.md has the formulas):
//   layer norm     each sample over the trailing normalized_shape; weight, bias per element
//   RMS norm       the same, dividing by the root mean square (no centering, no bias)
//   group norm     each (sample, group of C/G channels) over those channels x spatial
//   instance norm  each (sample, channel) over spatial (group norm with G = C), with
//                  optional running statistics as torch.nn.InstanceNorm{1,2,3}d
//
//   bnorm::LayerNorm<float> ln({768});                    // like torch.nn.LayerNorm(768)
//   ln.forward({x, {32, 128, 768}}, {y, {32, 128, 768}});
//   ln.backward({x, {32, 128, 768}}, {dy, {32, 128, 768}}, {dx, {32, 128, 768}});
//   bnorm::GroupNorm<float> gn(32, 256);                  // torch.nn.GroupNorm(32, 256)
//
// Layer and RMS norm read x as row-major in its sizes (layout channels_first); group and
// instance norm take (N, C, *spatial) in either layout, as batch norm. Empty spans mean
// "not given" (weight 1, bias 0, not saved, not computed).
#pragma once

#include <bnorm/error.hpp>
#include <bnorm/tensor_view.hpp>

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

BNORM_PUBLIC_BEGIN
namespace bnorm {

// ---- functional API ----------------------------------------------------------------

// x's sizes must end with normalized_shape (rank >= 1); weight, bias, dweight, dbias hold
// prod(normalized_shape) values; save_mean, save_rstd one per row (prod of the leading
// sizes). eps > 0.
template <class T>
void layer_norm_forward(const TensorView<const T>& x, const TensorView<T>& y,
                        std::span<const int64_t> normalized_shape, std::span<const T> weight,
                        std::span<const T> bias, double eps, std::span<T> save_mean,
                        std::span<T> save_rstd);

// dx.data == nullptr: dx not computed. save_mean, save_rstd: what the forward saved.
template <class T>
void layer_norm_backward(const TensorView<const T>& x, const TensorView<const T>& dy,
                         const TensorView<T>& dx, std::span<const int64_t> normalized_shape,
                         std::span<const T> weight, std::span<const T> save_mean,
                         std::span<const T> save_rstd, std::span<T> dweight,
                         std::span<T> dbias);

// eps std::nullopt: the machine epsilon of T (PyTorch's eps=None).
template <class T>
void rms_norm_forward(const TensorView<const T>& x, const TensorView<T>& y,
                      std::span<const int64_t> normalized_shape, std::span<const T> weight,
                      std::optional<double> eps, std::span<T> save_rstd);

template <class T>
void rms_norm_backward(const TensorView<const T>& x, const TensorView<const T>& dy,
                       const TensorView<T>& dx, std::span<const int64_t> normalized_shape,
                       std::span<const T> weight, std::span<const T> save_rstd,
                       std::span<T> dweight);

// x (N, C, *spatial); groups divides C; weight, bias, dweight, dbias: C values;
// save_mean, save_rstd: N * groups values (n * groups + g).
template <class T>
void group_norm_forward(const TensorView<const T>& x, const TensorView<T>& y, int64_t groups,
                        std::span<const T> weight, std::span<const T> bias, double eps,
                        std::span<T> save_mean, std::span<T> save_rstd);

template <class T>
void group_norm_backward(const TensorView<const T>& x, const TensorView<const T>& dy,
                         const TensorView<T>& dx, int64_t groups, std::span<const T> weight,
                         std::span<const T> save_mean, std::span<const T> save_rstd,
                         std::span<T> dweight, std::span<T> dbias);

// Instance norm with the input's statistics (training, or no running statistics):
// group norm with groups = C, and, when running_mean / running_var are given, PyTorch's
// update of them (bnorm.h). save_mean, save_rstd: N * C values. The backward of this
// forward is group_norm_backward with groups = C; instance norm with running statistics
// (eval) is batch_norm_forward_inference / batch_norm_backward_inference.
template <class T>
void instance_norm_forward_training(const TensorView<const T>& x, const TensorView<T>& y,
                                    std::span<const T> weight, std::span<const T> bias,
                                    double eps, double momentum, std::span<T> running_mean,
                                    std::span<T> running_var, std::span<T> save_mean,
                                    std::span<T> save_rstd);

// ---- modules --------------------------------------------------------------------------
// Each owns its parameters (and running statistics), the statistics its last forward
// saved, and the gradients its last backward computed. backward(x, dy, dx) is the
// gradient of the last forward, whose input was x; dx.data may be nullptr (not computed)
// or equal dy.data. train()/eval() matter to InstanceNorm with running statistics only;
// the others have them so that every module is driven the same way.

struct LayerNormOptions {
  double eps = 1e-5;
  bool elementwise_affine = true;  // false: no weight and no bias
  bool bias = true;                // false: weight only
};

template <class T>
class LayerNorm {
 public:
  explicit LayerNorm(std::vector<int64_t> normalized_shape, LayerNormOptions options = {});
  void forward(const TensorView<const T>& x, const TensorView<T>& y);
  void backward(const TensorView<const T>& x, const TensorView<const T>& dy,
                const TensorView<T>& dx);
  void train(bool mode = true) { training_ = mode; }
  void eval() { training_ = false; }
  bool is_training() const { return training_; }
  const std::vector<int64_t>& normalized_shape() const { return normalized_shape_; }
  const LayerNormOptions& options() const { return options_; }
  // eps > 0 and finite; the next forward uses it.
  void set_eps(double eps);
  std::span<T> weight() { return weight_; }
  std::span<T> bias() { return bias_; }
  std::span<const T> weight() const { return weight_; }
  std::span<const T> bias() const { return bias_; }
  std::span<const T> grad_weight() const { return grad_weight_; }
  std::span<const T> grad_bias() const { return grad_bias_; }
  void reset_parameters();  // weight = 1, bias = 0

 private:
  std::vector<int64_t> normalized_shape_;
  LayerNormOptions options_;
  bool training_ = true;
  std::vector<T> weight_, bias_, grad_weight_, grad_bias_, save_mean_, save_rstd_;
  std::vector<int64_t> saved_sizes_;
  bool saved_ = false;
};

struct RMSNormOptions {
  std::optional<double> eps;  // std::nullopt: the machine epsilon of T
  bool elementwise_affine = true;
};

template <class T>
class RMSNorm {
 public:
  explicit RMSNorm(std::vector<int64_t> normalized_shape, RMSNormOptions options = {});
  void forward(const TensorView<const T>& x, const TensorView<T>& y);
  void backward(const TensorView<const T>& x, const TensorView<const T>& dy,
                const TensorView<T>& dx);
  void train(bool mode = true) { training_ = mode; }
  void eval() { training_ = false; }
  bool is_training() const { return training_; }
  const std::vector<int64_t>& normalized_shape() const { return normalized_shape_; }
  const RMSNormOptions& options() const { return options_; }
  // eps > 0 and finite (std::nullopt: the machine epsilon of T); the next forward uses it.
  void set_eps(std::optional<double> eps);
  std::span<T> weight() { return weight_; }
  std::span<const T> weight() const { return weight_; }
  std::span<const T> grad_weight() const { return grad_weight_; }
  void reset_parameters();  // weight = 1

 private:
  std::vector<int64_t> normalized_shape_;
  RMSNormOptions options_;
  bool training_ = true;
  std::vector<T> weight_, grad_weight_, save_rstd_;
  std::vector<int64_t> saved_sizes_;
  bool saved_ = false;
};

struct GroupNormOptions {
  double eps = 1e-5;
  bool affine = true;  // false: no weight and bias
};

template <class T>
class GroupNorm {
 public:
  GroupNorm(int64_t num_groups, int64_t num_channels, GroupNormOptions options = {});
  void forward(const TensorView<const T>& x, const TensorView<T>& y);
  void backward(const TensorView<const T>& x, const TensorView<const T>& dy,
                const TensorView<T>& dx);
  void train(bool mode = true) { training_ = mode; }
  void eval() { training_ = false; }
  bool is_training() const { return training_; }
  int64_t num_groups() const { return num_groups_; }
  int64_t num_channels() const { return num_channels_; }
  const GroupNormOptions& options() const { return options_; }
  // eps > 0 and finite; the next forward uses it.
  void set_eps(double eps);
  std::span<T> weight() { return weight_; }
  std::span<T> bias() { return bias_; }
  std::span<const T> weight() const { return weight_; }
  std::span<const T> bias() const { return bias_; }
  std::span<const T> grad_weight() const { return grad_weight_; }
  std::span<const T> grad_bias() const { return grad_bias_; }
  void reset_parameters();  // weight = 1, bias = 0

 private:
  int64_t num_groups_, num_channels_;
  GroupNormOptions options_;
  bool training_ = true;
  std::vector<T> weight_, bias_, grad_weight_, grad_bias_, save_mean_, save_rstd_;
  std::vector<int64_t> saved_sizes_;
  Layout saved_layout_ = Layout::channels_first;
  bool saved_ = false;
};

// PyTorch's defaults: affine = false, track_running_stats = false.
struct InstanceNormOptions {
  double eps = 1e-5;
  double momentum = 0.1;
  bool affine = false;
  bool track_running_stats = false;
};

template <class T>
class InstanceNorm {
 public:
  explicit InstanceNorm(int64_t num_features, InstanceNormOptions options = {});
  // Training, or no running statistics: each instance's own statistics (running
  // statistics updated in training). Eval with running statistics: those.
  void forward(const TensorView<const T>& x, const TensorView<T>& y);
  void backward(const TensorView<const T>& x, const TensorView<const T>& dy,
                const TensorView<T>& dx);
  void train(bool mode = true) { training_ = mode; }
  void eval() { training_ = false; }
  bool is_training() const { return training_; }
  int64_t num_features() const { return num_features_; }
  const InstanceNormOptions& options() const { return options_; }
  // eps > 0 and finite; the next forward uses it.
  void set_eps(double eps);
  // In [0, 1]; the next training forward with running statistics uses it.
  void set_momentum(double momentum);
  std::span<T> weight() { return weight_; }
  std::span<T> bias() { return bias_; }
  std::span<T> running_mean() { return running_mean_; }
  std::span<T> running_var() { return running_var_; }
  std::span<const T> weight() const { return weight_; }
  std::span<const T> bias() const { return bias_; }
  std::span<const T> running_mean() const { return running_mean_; }
  std::span<const T> running_var() const { return running_var_; }
  std::span<const T> grad_weight() const { return grad_weight_; }
  std::span<const T> grad_bias() const { return grad_bias_; }
  void reset_running_stats();  // running_mean = 0, running_var = 1
  void reset_parameters();     // weight = 1, bias = 0, and reset_running_stats()

 private:
  enum class Saved { nothing, instance_statistics, running_statistics };
  int64_t num_features_;
  InstanceNormOptions options_;
  bool training_ = true;
  std::vector<T> weight_, bias_, running_mean_, running_var_, grad_weight_, grad_bias_;
  std::vector<T> save_mean_, save_rstd_;
  std::vector<int64_t> saved_sizes_;
  Layout saved_layout_ = Layout::channels_first;
  Saved saved_ = Saved::nothing;
};

extern template class LayerNorm<float>;
extern template class LayerNorm<double>;
extern template class RMSNorm<float>;
extern template class RMSNorm<double>;
extern template class GroupNorm<float>;
extern template class GroupNorm<double>;
extern template class InstanceNorm<float>;
extern template class InstanceNorm<double>;

}  // namespace bnorm
BNORM_PUBLIC_END
