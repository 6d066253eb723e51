// 2-D pooling over NCHW tensors, no padding, floor mode (PyTorch's defaults).
//   Ho = (H - k) / s + 1,  Wo likewise; stride defaults to the kernel size.
// AvgPool2d: y = mean of the k x k window; dx spreads dy / k^2 over the window.
// MaxPool2d: y = max of the window (first maximum wins on ties, as in PyTorch);
//   dx routes dy to the position that won, remembered in forward.
#pragma once

#include <vector>

#include "nn/layer.h"

namespace bnorm::nn {

template <class T>
class AvgPool2d final : public Layer<T> {
 public:
  explicit AvgPool2d(int64_t kernel_size, int64_t stride = 0);  // stride 0: kernel_size
  std::string describe() const override;
  Shape output_shape(const Shape& input) const override;
  void forward(const Tensor<T>& x, Tensor<T>& y) override;
  void backward(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>& dy,
                Tensor<T>* dx) override;

 private:
  int64_t kernel_, stride_;
};

template <class T>
class MaxPool2d final : public Layer<T> {
 public:
  explicit MaxPool2d(int64_t kernel_size, int64_t stride = 0);
  std::string describe() const override;
  Shape output_shape(const Shape& input) const override;
  void forward(const Tensor<T>& x, Tensor<T>& y) override;
  void backward(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>& dy,
                Tensor<T>* dx) override;

 private:
  int64_t kernel_, stride_;
  std::vector<int32_t> argmax_;  // per output: the winning offset inside its input plane
};

extern template class AvgPool2d<float>;
extern template class AvgPool2d<double>;
extern template class MaxPool2d<float>;
extern template class MaxPool2d<double>;

}  // namespace bnorm::nn
