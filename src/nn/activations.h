// Elementwise activations; each backward uses the saved output y where it can.
//   Sigmoid: y = 1 / (1 + e^-x),  dx = dy * y * (1 - y)
//   Tanh:    y = tanh x,          dx = dy * (1 - y^2)
//   ReLU:    y = max(x, 0),       dx = dy * [x > 0]
// Any shape; the output has the input's shape.
#pragma once

#include "nn/layer.h"

namespace bnorm::nn {

enum class Activation { sigmoid, tanh, relu };

template <class T>
class Elementwise final : public Layer<T> {
 public:
  explicit Elementwise(Activation kind) : kind_(kind) {}
  std::string describe() const override;
  Shape output_shape(const Shape& input) const override { return input; }
  void forward(const Tensor<T>& x, Tensor<T>& y) override;
  void backward(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>& dy,
                Tensor<T>* dx) override;
  Activation kind() const { return kind_; }

 private:
  Activation kind_;
};

extern template class Elementwise<float>;
extern template class Elementwise<double>;

}  // namespace bnorm::nn
