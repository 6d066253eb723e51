// Fully connected layer, PyTorch's layout: weight (out, in), y = x * weight^T + bias.
//
//   x: (N, in)  y: (N, out)
//   dW = dy^T * x  (out x in),  db = column sums of dy,  dx = dy * W  (N x in)
// Each product is one BLAS GEMM (threaded by OpenBLAS's OpenMP build).
#pragma once

#include <vector>

#include "nn/layer.h"

namespace bnorm::nn {

template <class T>
class Linear final : public Layer<T> {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true);

  std::string describe() const override;
  Shape output_shape(const Shape& input) const override;
  void forward(const Tensor<T>& x, Tensor<T>& y) override;
  void backward(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>& dy,
                Tensor<T>* dx) override;
  void collect_state(StateLists<T>& out, const std::string& prefix) override;

  std::span<T> weight() { return weight_; }
  std::span<T> bias() { return bias_; }
  int64_t fan_in() const { return in_; }
  int64_t fan_out() const { return out_; }

 private:
  int64_t in_, out_;
  std::vector<T> weight_, bias_, grad_weight_, grad_bias_;
};

extern template class Linear<float>;
extern template class Linear<double>;

}  // namespace bnorm::nn
