// Stochastic gradient descent with momentum and weight decay, PyTorch's rule
// (dampening 0, not Nesterov):
//   g = grad + weight_decay * p
//   b = momentum * b + g        (b starts at 0, so the first step has b = g)
//   p = p - lr * b              (without momentum: p = p - lr * g)
#pragma once

#include <string>
#include <vector>

#include "nn/layer.h"

namespace bnorm::nn {

struct SgdOptions {
  double lr = 0.1;
  double momentum = 0.0;
  double weight_decay = 0.0;
};

template <class T>
class Sgd {
 public:
  Sgd(std::vector<Parameter<T>> parameters, const SgdOptions& options);

  void step();
  const SgdOptions& options() const { return options_; }
  void set_lr(double lr);

  // The momentum buffers, named "momentum_buffer.<parameter name>" (none without
  // momentum), for checkpoints.
  std::vector<Buffer<T>> state();
  // The name state() gives the first momentum buffer holding a NaN or an infinity, or
  // an empty string; allocates nothing when all are finite.
  std::string first_non_finite_buffer() const;

 private:
  std::vector<Parameter<T>> parameters_;
  SgdOptions options_;
  std::vector<std::vector<T>> momentum_;
};

extern template class Sgd<float>;
extern template class Sgd<double>;

}  // namespace bnorm::nn
