// The normalization family for the engine: LayerNorm, RMSNorm, GroupNorm and
// InstanceNorm{1,2}d layers, each a thin layer over the library's public module
// (bnorm/norms.hpp), used exactly as any user would use it (as BatchNormLayer is).
//   LayerNorm / RMSNorm: x (..., *normalized_shape), normalized over the trailing dims.
//   GroupNorm:           x (N, C, *), statistics per (sample, group of C/G channels).
//   InstanceNorm2d:      x (N, C, H, W), statistics per (sample, channel) over H x W.
// State names follow PyTorch's modules (weight, bias; running_mean, running_var when an
// InstanceNorm tracks running statistics).
#pragma once

#include <bnorm/norms.hpp>

#include <variant>
#include <vector>

#include "nn/layer.h"

namespace bnorm::nn {

template <class T>
class NormLayer final : public Layer<T> {
 public:
  using Module = std::variant<LayerNorm<T>, RMSNorm<T>, GroupNorm<T>, InstanceNorm<T>>;

  // instance_spatial_rank: the N of InstanceNorm{N}d (1 or 2); ignored by the others.
  explicit NormLayer(Module module, int instance_spatial_rank = 2);

  std::string describe() const override;
  Shape output_shape(const Shape& input) const override;
  void forward(const Tensor<T>& x, Tensor<T>& y) override;
  void backward(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>& dy,
                Tensor<T>* dx) override;
  void collect_state(StateLists<T>& out, const std::string& prefix) override;
  void set_training(bool training) override;

  Module& module() { return module_; }

 private:
  void point_views(const Tensor<T>& x);

  Module module_;
  int instance_spatial_rank_;
  TensorView<const T> x_view_, dy_view_;
  TensorView<T> y_view_, dx_view_;
};

extern template class NormLayer<float>;
extern template class NormLayer<double>;

}  // namespace bnorm::nn
