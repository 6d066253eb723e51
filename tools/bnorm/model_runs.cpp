#include "model_runs.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "nn/checkpoint.h"
#include "nn/loss.h"
#include "nn/models.h"

namespace bnorm::cli {

std::unique_ptr<nn::Sequential<float>> eval_copy(const std::string& model_name,
                                                 nn::Sequential<float>& from) {
  auto model = nn::make_model<float>(model_name, 0);
  model->copy_state_from(from);
  model->set_training(false);
  return model;
}

CheckpointModel load_checkpoint_model(const std::string& path) {
  const nn::Checkpoint c = nn::read_checkpoint(path);
  CheckpointModel m;
  m.options = nn::Trainer::options_from(c, path);
  // The trainer reads and checks the checkpoint's tensors (names, shapes, finite values);
  // its model's state then goes into a plain model of the same layers.
  nn::Trainer trainer(m.options);
  trainer.restore(c, path);
  m.epochs = trainer.epochs_done();
  m.model = eval_copy(m.options.model, trainer.model());
  return m;
}

nn::ReplicaEvaluator::CopyMaker copies_of(const std::string& model_name,
                                          std::function<void(nn::Sequential<float>&)> rewrite) {
  return [model_name, rewrite = std::move(rewrite)] {
    auto copy = nn::make_model<float>(model_name, 0);
    copy->set_training(false);
    if (rewrite) rewrite(*copy);
    return copy;
  };
}

ModelScore score_model(nn::ReplicaEvaluator& evaluator, nn::Sequential<float>& model,
                       const nn::ReplicaEvaluator::CopyMaker& copies,
                       const data::ImageDataset& data, int64_t batch_size, int threads) {
  ModelScore s;
  s.examples = data.count;
  if (data.count < 1) return s;
  const auto t0 = std::chrono::steady_clock::now();
  const nn::LossTotals totals = evaluator.run(model, copies, data, 0, data.count, batch_size, threads);
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  s.loss = totals.loss_sum / static_cast<double>(data.count);
  s.accuracy = static_cast<double>(totals.correct) / static_cast<double>(data.count);
  s.examples_per_sec = s.seconds > 0 ? static_cast<double>(data.count) / s.seconds : 0;
  return s;
}

std::vector<float> model_logits(nn::Sequential<float>& model, const data::ImageDataset& data,
                                int64_t batch_size, int64_t* classes) {
  std::vector<float> logits;
  nn::Tensor<float> batch;
  std::vector<int32_t> labels;
  *classes = 0;
  for (int64_t first = 0; first < data.count; first += batch_size) {
    nn::gather_examples(data, {}, first, std::min(data.count, first + batch_size), batch, labels);
    const nn::Tensor<float>& out = model.forward(batch);
    if (out.rank() != 2) throw std::logic_error("logits: the model's output is not (N, classes)");
    *classes = out.dim(1);
    logits.insert(logits.end(), out.values().begin(), out.values().end());
  }
  return logits;
}

std::string npy_bytes(const std::vector<float>& values, const std::vector<int64_t>& shape) {
  static_assert(std::endian::native == std::endian::little, "'<f4' is little-endian");
  std::string dims;  // "3," for (3,), "3, 10" for (3, 10)
  for (size_t i = 0; i < shape.size(); ++i) dims += (i ? ", " : "") + std::to_string(shape[i]);
  if (shape.size() == 1) dims += ",";
  std::string header =
      "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  // magic (6) + version (2) + length (2) + header, padded with spaces to a multiple of
  // 64 and ended by a newline (the format's rule, so the data is aligned).
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  std::string bytes("\x93NUMPY\x01\x00", 8);
  bytes.push_back(static_cast<char>(header.size() & 0xff));
  bytes.push_back(static_cast<char>(header.size() >> 8));
  bytes += header;
  const size_t offset = bytes.size();
  bytes.resize(offset + values.size() * sizeof(float));
  std::memcpy(bytes.data() + offset, values.data(), values.size() * sizeof(float));
  return bytes;
}

}  // namespace bnorm::cli
