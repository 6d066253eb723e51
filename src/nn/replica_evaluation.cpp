#include "nn/replica_evaluation.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <stdexcept>


namespace bnorm::nn {

void gather_examples(const data::ImageDataset& data, const std::vector<int64_t>& order,
                     int64_t begin, int64_t end, Tensor<float>& batch,
                     std::vector<int32_t>& labels) {
  const int64_t n = end - begin, size = data.image_size();
  batch.resize({n, data.channels, data.rows, data.cols});
  labels.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t src = order.empty() ? begin + i : order[static_cast<size_t>(begin + i)];
    std::memcpy(batch.data() + i * size, data.images.data() + src * size,
                static_cast<size_t>(size) * sizeof(float));
    labels[static_cast<size_t>(i)] = data.labels[static_cast<size_t>(src)];
  }
}

void ReplicaEvaluator::prepare(Sequential<float>& model, const CopyMaker& make_copy,
                               int threads) {
  const auto copies = static_cast<size_t>(threads - 1);
  if (batches_.size() < copies + 1) {  // grown only: a smaller team uses the first ones
    batches_.resize(copies + 1);
    labels_.resize(copies + 1);
  }
  // The same model, unchanged since (Sequential::structure_version): copies_ still holds
  // spans into its state. A rewritten model (fold, simulate) gets new copies.
  if (prepared_for_ == &model && prepared_version_ == model.structure_version() &&
      replicas_.size() >= copies)
    return;
  if (prepared_for_ != &model || prepared_version_ != model.structure_version())
    replicas_.clear();
  while (replicas_.size() < copies) replicas_.push_back(make_copy());
  states_.clear();
  states_.push_back(model.state());
  for (auto& r : replicas_) states_.push_back(r->state());
  copies_.clear();
  counter_copies_.clear();
  const StateLists<float>& from = states_[0];
  for (size_t r = 1; r < states_.size(); ++r) {
    const StateLists<float>& to = states_[r];
    if (to.parameters.size() != from.parameters.size() ||
        to.buffers.size() != from.buffers.size() || to.counters.size() != from.counters.size())
      throw std::logic_error("evaluation: a copy of the model does not match its state");
    for (size_t i = 0; i < from.parameters.size(); ++i)
      copies_.emplace_back(from.parameters[i].value, to.parameters[i].value);
    for (size_t i = 0; i < from.buffers.size(); ++i)
      copies_.emplace_back(from.buffers[i].value, to.buffers[i].value);
    for (size_t i = 0; i < from.counters.size(); ++i)
      counter_copies_.emplace_back(&from.counters[i], &to.counters[i]);
  }
  for (const auto& [src, dst] : copies_)
    if (src.size() != dst.size())
      throw std::logic_error("evaluation: a copy of the model has other shapes");
  prepared_for_ = &model;
  prepared_version_ = model.structure_version();
}

// One batch at a time through the model, each over every engine thread.
LossTotals ReplicaEvaluator::run_serially(Sequential<float>& model, const data::ImageDataset& data,
                                          int64_t begin, int64_t end, int64_t batch_size) {
  const bool was_training = model.is_training();
  model.set_training(false);
  if (batches_.empty()) {
    batches_.resize(1);
    labels_.resize(1);
  }
  const std::vector<int64_t> in_order;
  LossTotals total;
  for (int64_t first = begin; first < end; first += batch_size) {
    gather_examples(data, in_order, first, std::min(end, first + batch_size), batches_[0],
                    labels_[0]);
    const LossTotals t = softmax_cross_entropy<float>(model.forward(batches_[0]), labels_[0], nullptr);
    total.loss_sum += t.loss_sum;
    total.correct += t.correct;
  }
  model.set_training(was_training);
  return total;
}

LossTotals ReplicaEvaluator::run(Sequential<float>& model, const CopyMaker& make_copy,
                                 const data::ImageDataset& data, int64_t begin, int64_t end,
                                 int64_t batch_size, int threads) {
  const int64_t batches = (end - begin + batch_size - 1) / batch_size;
  threads = static_cast<int>(std::min<int64_t>(threads, batches));
  if (threads <= 1) return run_serially(model, data, begin, end, batch_size);
  prepare(model, make_copy, threads);
  for (const auto& [src, dst] : copies_) std::copy(src.begin(), src.end(), dst.begin());
  for (const auto& [src, dst] : counter_copies_) dst->set(src->get());
  const bool was_training = model.is_training();
  model.set_training(false);
  for (auto& r : replicas_) r->set_training(false);
  per_batch_.assign(static_cast<size_t>(batches), LossTotals{});
  const int levels = omp_get_max_active_levels();
  omp_set_max_active_levels(1);  // the layers' own loops run on their caller's thread
  std::exception_ptr failure;  // the first thread's exception, rethrown after the region
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    try {
      Sequential<float>& m = t == 0 ? model : *replicas_[static_cast<size_t>(t - 1)];
      Tensor<float>& batch = batches_[static_cast<size_t>(t)];
      std::vector<int32_t>& labels = labels_[static_cast<size_t>(t)];
      const std::vector<int64_t> in_order;
      for (int64_t b = t; b < batches; b += threads) {
        const int64_t first = begin + b * batch_size;
        gather_examples(data, in_order, first, std::min(end, first + batch_size), batch, labels);
        per_batch_[static_cast<size_t>(b)] =
            softmax_cross_entropy<float>(m.forward(batch), labels, nullptr);
      }
    } catch (...) {
#pragma omp critical(bnorm_replica_evaluation)
      if (!failure) failure = std::current_exception();
    }
  }
  omp_set_max_active_levels(levels);
  model.set_training(was_training);
  if (failure) std::rethrow_exception(failure);
  LossTotals total;
  for (const LossTotals& t : per_batch_) {
    total.loss_sum += t.loss_sum;
    total.correct += t.correct;
  }
  return total;
}

}  // namespace bnorm::nn
