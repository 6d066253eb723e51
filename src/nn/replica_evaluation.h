// Evaluation with batch-level threads: T threads each run whole batches through a model
// of their own (the trained model and T - 1 copies of it), one thread per batch, so a
// forward pass needs no synchronization at all, where one batch over T threads meets at
// every layer (about a dozen parallel regions per LeNet forward, each waking threads that
// sleep under OMP_WAIT_POLICY=passive: docs/training.md, "Speed").
//
//   threads:   t runs batches t, t + T, t + 2T, ... (a fixed assignment)
//   totals:    per batch, then summed in batch order: the same for any run with T threads
// With one thread, or one batch, the batches run one by one over every engine thread.
// Inside the region the layers' own parallel loops, the batch norm library's and
// OpenBLAS's run on one thread (nested regions stay inactive). The copies take the
// model's parameters, buffers and counters before every evaluation; they are built and
// sized on first use and reused (no allocation once warm).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "data/dataset.h"
#include "nn/loss.h"
#include "nn/sequential.h"

namespace bnorm::nn {

// batch (n, C, H, W) and labels (n) = examples order[begin, end) of data (begin + i when
// order is empty). Storage kept across calls.
void gather_examples(const data::ImageDataset& data, const std::vector<int64_t>& order,
                     int64_t begin, int64_t end, Tensor<float>& batch,
                     std::vector<int32_t>& labels);

class ReplicaEvaluator {
 public:
  // Builds a copy of the model's layers (its state is copied in by the evaluator):
  // make_model for a named model, or what built a folded or quantized one.
  using CopyMaker = std::function<std::unique_ptr<Sequential<float>>()>;

  // The loss and accuracy totals of model (in eval mode) over examples [begin, end) of
  // data in batches of batch_size, on `threads` threads; make_copy builds the copies,
  // which must match model layer for layer (their state counts and sizes are checked).
  LossTotals run(Sequential<float>& model, const CopyMaker& make_copy,
                 const data::ImageDataset& data, int64_t begin, int64_t end, int64_t batch_size,
                 int threads);

 private:
  void prepare(Sequential<float>& model, const CopyMaker& make_copy, int threads);
  LossTotals run_serially(Sequential<float>& model, const data::ImageDataset& data,
                          int64_t begin, int64_t end, int64_t batch_size);

  std::vector<std::unique_ptr<Sequential<float>>> replicas_;
  // (from, to) for every parameter and buffer of every copy, in the model's order.
  std::vector<std::pair<std::span<const float>, std::span<float>>> copies_;
  std::vector<std::pair<const Counter*, const Counter*>> counter_copies_;
  std::vector<StateLists<float>> states_;  // keeps the counters copies_ points into
  const Sequential<float>* prepared_for_ = nullptr;
  uint64_t prepared_version_ = 0;
  std::vector<Tensor<float>> batches_;
  std::vector<std::vector<int32_t>> labels_;
  std::vector<LossTotals> per_batch_;
};

}  // namespace bnorm::nn
