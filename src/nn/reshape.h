// Flatten: (N, C, H, W) -> (N, C*H*W), the values unchanged (row-major order).
// Dropout: in training, y = x * m / (1 - p) with m ~ Bernoulli(1 - p) per element
//   (inverted dropout, as in PyTorch); in eval, y = x. The mask for the k-th
//   training forward is hash(seed, k, index) -- recomputable, so a resumed run draws
//   the same masks; k is a counter saved with the model.
#pragma once

#include <vector>

#include "nn/layer.h"

namespace bnorm::nn {

template <class T>
class Flatten final : public Layer<T> {
 public:
  std::string describe() const override { return "Flatten()"; }
  Shape output_shape(const Shape& input) const override;
  void forward(const Tensor<T>& x, Tensor<T>& y) override;
  void backward(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>& dy,
                Tensor<T>* dx) override;
};

template <class T>
class Dropout final : public Layer<T> {
 public:
  Dropout(double p, uint64_t seed);
  std::string describe() const override;
  Shape output_shape(const Shape& input) const override { return input; }
  void forward(const Tensor<T>& x, Tensor<T>& y) override;
  void backward(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>& dy,
                Tensor<T>* dx) override;
  void collect_state(StateLists<T>& out, const std::string& prefix) override;
  double p() const { return p_; }

 private:
  double p_;
  uint64_t seed_;
  int64_t draws_ = 0;     // training forwards so far
  std::vector<T> mask_;   // 0 or 1/(1-p), from the last training forward
  bool masked_ = false;   // whether the last forward applied mask_ (backward follows it)
};

extern template class Flatten<float>;
extern template class Flatten<double>;
extern template class Dropout<float>;
extern template class Dropout<double>;

}  // namespace bnorm::nn
