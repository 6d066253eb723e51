// bnorm: synchronized batch norm (SyncBN), C++ API over sync_batch_norm.h (the contract:
// one collective per forward and per backward, rank-order merge, empty slices, every
// process told of any process's refusal).
//
//   bnorm_collective comm = ...;                          // bnorm::dist::MpiCommunicator, or yours
//   bnorm::SyncBatchNorm<float> bn(64, comm);             // BatchNorm<float>, synchronized
//   bn.forward(x, y);  bn.backward(x, dy, dx);            // this process's slice of the batch
//
// A BatchNorm<T> becomes synchronized with bn.synchronize(&comm) (what
// SyncBatchNorm's constructor does; PyTorch's convert_sync_batchnorm for one module).
#pragma once

#include <bnorm/bnorm.hpp>
#include <bnorm/sync_batch_norm.h>

BNORM_PUBLIC_BEGIN
namespace bnorm {

// Functional SyncBN. x.sizes[0] may be 0 (an empty slice: its data may be null); every
// other argument as batch_norm_forward_training / batch_norm_backward. A refusal on any
// process throws on every process (BNORM_ERROR_COLLECTIVE on the others).
template <class T>
void sync_batch_norm_forward_training(const bnorm_collective& collective,
                                      const TensorView<const T>& x, const TensorView<T>& y,
                                      std::span<const T> weight, std::span<const T> bias,
                                      double eps, const RunningStatsUpdate& update,
                                      std::span<T> running_mean, std::span<T> running_var,
                                      std::span<T> save_mean, std::span<T> save_invstd);

template <class T>
void sync_batch_norm_backward(const bnorm_collective& collective, const TensorView<const T>& x,
                              const TensorView<const T>& dy, const TensorView<T>& dx,
                              std::span<const T> weight, std::span<const T> save_mean,
                              std::span<const T> save_invstd, std::span<T> dweight,
                              std::span<T> dbias);

// torch.nn.SyncBatchNorm: a BatchNorm<T> whose training-mode forwards (and their
// backwards) use the statistics of the whole batch across `collective`'s processes.
// Eval mode needs no communication: the running statistics, or without them this
// process's batch (as PyTorch). grad_weight() and grad_bias() are the global gradients.
template <class T>
class SyncBatchNorm : public BatchNorm<T> {
 public:
  SyncBatchNorm(int64_t num_features, const bnorm_collective& collective,
                BatchNormOptions options = {})
      : BatchNorm<T>(num_features, options) {
    this->synchronize(&collective);
  }
};

}  // namespace bnorm
BNORM_PUBLIC_END
