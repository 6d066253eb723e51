// 2-D convolution (cross-correlation, as in PyTorch) over NCHW tensors.
//
//   x: (N, Cin, H, W)   weight: (Cout, Cin, k, k)   bias: (Cout)   y: (N, Cout, Ho, Wo)
//   Ho = (H + 2p - k) / s + 1,  Wo likewise
//
// Two ways, the same numbers up to rounding (tests/cpp/nn/test_conv_direct.cpp):
// - direct (conv_direct.h; stride 1, k <= 9, few channels): images in parallel; the weight
//   and bias gradients per group of 8 images, the groups summed in order (the same bits
//   for any thread count); nothing kept from the forward.
// - im2col + one BLAS GEMM per image: y[n] = weight(Cout x K) * col(x[n]) (K x Ho*Wo) + bias,
//   K = Cin*k*k; backward dW += dy[n] * col^T, db += row sums of dy[n],
//   dx[n] = col2im(weight^T * dy[n]). Each thread keeps its own dW/db partials, summed in
//   thread order. In training mode the forward keeps every image's columns (K x Ho*Wo
//   floats per image) so the backward does not rebuild them; in eval mode one buffer per
//   thread is reused.
#pragma once

#include <vector>

#include "nn/layer.h"
#include "nn/thread_scratch.h"

namespace bnorm::nn {

// How a layer computes: `automatic` picks the direct kernels where they apply and are
// faster (stride 1, kernel <= 9, few channels: see Conv2d::uses_direct); tests and
// benchmarks force one or the other.
enum class ConvAlgorithm { automatic, direct, gemm };

struct Conv2dOptions {
  int64_t in_channels = 1;
  int64_t out_channels = 1;
  int64_t kernel_size = 3;
  int64_t stride = 1;
  int64_t padding = 0;
  bool bias = true;
  ConvAlgorithm algorithm = ConvAlgorithm::automatic;
};

template <class T>
class Conv2d final : public Layer<T> {
 public:
  explicit Conv2d(const Conv2dOptions& options);

  std::string describe() const override;
  Shape output_shape(const Shape& input) const override;
  void forward(const Tensor<T>& x, Tensor<T>& y) override;
  void backward(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>& dy,
                Tensor<T>* dx) override;
  void collect_state(StateLists<T>& out, const std::string& prefix) override;

  const Conv2dOptions& options() const { return options_; }
  std::span<T> weight() { return weight_; }
  std::span<T> bias() { return bias_; }  // empty without bias
  int64_t fan_in() const { return options_.in_channels * kernel_area(); }
  int64_t fan_out() const { return options_.out_channels * kernel_area(); }
  // Whether forward and backward run the direct kernels (else im2col + GEMM).
  bool uses_direct() const { return direct_; }

 private:
  int64_t kernel_area() const { return options_.kernel_size * options_.kernel_size; }

  void forward_direct(const Tensor<T>& x, Tensor<T>& y);
  void backward_direct(const Tensor<T>& x, const Tensor<T>& dy, Tensor<T>* dx);

  Conv2dOptions options_;
  bool direct_ = false;
  std::vector<T> weight_, bias_, grad_weight_, grad_bias_;
  ThreadScratch<T> staged_, input_gradient_, gradient_rows_;
  std::vector<T> group_slots_;  // direct: each image group's weight and bias gradient lanes
  std::vector<T> bias_lanes_;   // im2col: the threads' bias partials summed, still in lanes
  ThreadScratch<T> columns_, column_grads_, weight_partials_, bias_partials_, pads_;
  std::vector<T> batch_columns_;  // training: the last forward's columns, image by image
  const T* columns_of_ = nullptr; // the input those columns were built from
  Shape columns_shape_;
};

extern template class Conv2d<float>;
extern template class Conv2d<double>;

}  // namespace bnorm::nn
