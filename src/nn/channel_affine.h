// A per-channel affine map, what batch norm becomes in eval mode when it cannot fold
// into a layer before it (after a pooling layer or an activation: model_folding.h):
//
//   x: (N, C, *)   y[n, c, i] = x[n, c, i] * scale[c] + shift[c]
//   backward: dx = dy * scale[c],  dscale[c] = sum_{n,i} dy * x,  dshift[c] = sum_{n,i} dy
//
// State: weight (scale) and bias (shift), C values each. The sums accumulate in double,
// channel by channel in a fixed order (the same bits for any thread count).
#pragma once

#include <vector>

#include "nn/layer.h"

namespace bnorm::nn {

template <class T>
class ChannelAffine final : public Layer<T> {
 public:
  // scale and shift: one value per channel, the same count (std::invalid_argument otherwise).
  ChannelAffine(std::vector<T> scale, std::vector<T> shift);

  std::string describe() const override;
  Shape output_shape(const Shape& input) const override;
  void forward(const Tensor<T>& x, Tensor<T>& y) override;
  void backward(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>& dy,
                Tensor<T>* dx) override;
  void collect_state(StateLists<T>& out, const std::string& prefix) override;

  std::span<const T> scale() const { return scale_; }
  std::span<const T> shift() const { return shift_; }

 private:
  std::vector<T> scale_, shift_, grad_scale_, grad_shift_;
};

extern template class ChannelAffine<float>;
extern template class ChannelAffine<double>;

}  // namespace bnorm::nn
