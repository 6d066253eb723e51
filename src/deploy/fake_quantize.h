// A QuantizeLinear / DequantizeLinear pair as an engine layer: y = fake_quantize(x)
// (quantization.h), element by element, in float, exactly as the ONNX runtime computes
// the pair. Backward: the straight-through estimator, dx = dy where x lands inside
// the uint8 range, 0 where it saturates.
#pragma once

#include "deploy/quantization.h"
#include "nn/layer.h"

namespace bnorm::deploy {

class FakeQuantize final : public nn::Layer<float> {
 public:
  explicit FakeQuantize(const ActivationQuantization& q) : q_(q) {}
  std::string describe() const override;
  nn::Shape output_shape(const nn::Shape& input) const override { return input; }
  void forward(const nn::Tensor<float>& x, nn::Tensor<float>& y) override;
  void backward(const nn::Tensor<float>& x, const nn::Tensor<float>& y,
                const nn::Tensor<float>& dy, nn::Tensor<float>* dx) override;
  const ActivationQuantization& quantization() const { return q_; }

 private:
  ActivationQuantization q_;
};

}  // namespace bnorm::deploy
