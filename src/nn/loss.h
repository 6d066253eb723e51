// Softmax cross-entropy over logits (N, K) and integer labels, mean over the batch
// (PyTorch's CrossEntropyLoss):
//   loss_n = logsumexp(z_n) - z_n[y_n],   dz_n = (softmax(z_n) - onehot(y_n)) / N
// logsumexp subtracts the row max first, so large logits do not overflow.
#pragma once

#include <cstdint>
#include <span>

#include "nn/tensor.h"

namespace bnorm::nn {

struct LossTotals {
  double loss_sum = 0;  // sum over the batch of loss_n (divide by N for the mean)
  int64_t correct = 0;  // examples whose arg max (first on ties) is the label
};

// Writes dlogits (same shape as logits) unless it is null. Labels must be in [0, K).
// The gradient is that of sum(loss_n) / mean_over; 0 means N, the batch's mean. A
// data-parallel process passes the global batch's size, so that its slice's gradients
// sum over the processes to the gradient of the global batch's mean loss.
template <class T>
LossTotals softmax_cross_entropy(const Tensor<T>& logits, std::span<const int32_t> labels,
                                 Tensor<T>* dlogits, int64_t mean_over = 0);

}  // namespace bnorm::nn
