// BatchNorm1d / BatchNorm2d for the engine: a thin layer over the library's public
// bnorm::BatchNorm<T> module, used exactly as any user would use it.
//   BatchNorm1d: x (N, C) or (N, C, L);  BatchNorm2d: x (N, C, H, W).
// Statistics per channel over every other axis; PyTorch's defaults (eps 1e-5,
// momentum 0.1, unbiased running variance) unless the options say otherwise.
#pragma once

#include <bnorm/bnorm.hpp>

#include "nn/layer.h"

namespace bnorm::nn {

template <class T>
class BatchNormLayer final : public Layer<T> {
 public:
  // spatial_rank: 0 or 1 for BatchNorm1d, 2 for BatchNorm2d.
  BatchNormLayer(int64_t num_features, int spatial_rank, const BatchNormOptions& options = {});

  std::string describe() const override;
  Shape output_shape(const Shape& input) const override;
  void forward(const Tensor<T>& x, Tensor<T>& y) override;
  void backward(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>& dy,
                Tensor<T>* dx) override;
  void collect_state(StateLists<T>& out, const std::string& prefix) override;
  void set_training(bool training) override;

  BatchNorm<T>& module() { return module_; }

 private:
  // Views kept between calls: only the data pointers and sizes change, in place.
  void point_views(const Tensor<T>& x);

  int spatial_rank_;
  BatchNorm<T> module_;
  TensorView<const T> x_view_, dy_view_;
  TensorView<T> y_view_, dx_view_;
};

extern template class BatchNormLayer<float>;
extern template class BatchNormLayer<double>;

}  // namespace bnorm::nn
