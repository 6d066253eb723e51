// 2-D pooling over NCHW tensors, no padding, floor mode (PyTorch's defaults).
//   Ho = (H - k) / s + 1,  Wo likewise; stride defaults to the kernel size.
// AvgPool2d: y = mean of the k x k window; dx spreads dy / k^2 over the window.
// MaxPool2d: y = max of the window (first maximum wins on ties, as in PyTorch);
//   dx routes dy to the position that won, remembered in forward.
#pragma once

#include <vector>

#include "nn/layer.h"

namespace bnorm::nn {

// What both pools share: the window (kernel, stride), the output shape and the name.
template <class T>
class Pool2d : public Layer<T> {
 public:
  std::string describe() const override;
  Shape output_shape(const Shape& input) const override;
  int64_t kernel_size() const { return kernel_; }
  int64_t stride() const { return stride_; }

 protected:
  // stride 0: the kernel size. Throws std::invalid_argument naming the layer.
  Pool2d(const char* name, int64_t kernel_size, int64_t stride);
  const char* name_;
  int64_t kernel_, stride_;
};

template <class T>
class AvgPool2d final : public Pool2d<T> {
 public:
  explicit AvgPool2d(int64_t kernel_size, int64_t stride = 0)
      : Pool2d<T>("AvgPool2d", kernel_size, stride) {}
  void forward(const Tensor<T>& x, Tensor<T>& y) override;
  void backward(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>& dy,
                Tensor<T>* dx) override;

 private:
  using Pool2d<T>::kernel_;
  using Pool2d<T>::stride_;
};

template <class T>
class MaxPool2d final : public Pool2d<T> {
 public:
  explicit MaxPool2d(int64_t kernel_size, int64_t stride = 0)
      : Pool2d<T>("MaxPool2d", kernel_size, stride) {}
  void forward(const Tensor<T>& x, Tensor<T>& y) override;
  void backward(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>& dy,
                Tensor<T>* dx) override;

 private:
  using Pool2d<T>::kernel_;
  using Pool2d<T>::stride_;
  std::vector<int32_t> argmax_;  // per output: the winning offset inside its input plane
};

extern template class Pool2d<float>;
extern template class Pool2d<double>;
extern template class AvgPool2d<float>;
extern template class AvgPool2d<double>;
extern template class MaxPool2d<float>;
extern template class MaxPool2d<double>;

}  // namespace bnorm::nn
