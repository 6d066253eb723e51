// What the inference commands (evaluate, export, quantize) share: a checkpoint's model
// rebuilt in eval mode, a timed and scored pass over a data set with any model (the
// checkpoint's, its folded form, its simulated int8 form), the logits of such a pass,
// and the .npy file the logits go to.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "nn/replica_evaluation.h"
#include "nn/sequential.h"
#include "nn/trainer.h"

namespace bnorm::cli {

struct CheckpointModel {
  nn::TrainOptions options;  // the checkpoint's (model name, batch size, ...)
  int epochs = 0;            // epochs the checkpoint was trained for
  std::unique_ptr<nn::Sequential<float>> model;  // its weights and statistics, eval mode
};

// A plain eval-mode model of `from`'s layers (the named model) holding its state.
std::unique_ptr<nn::Sequential<float>> eval_copy(const std::string& model_name,
                                                 nn::Sequential<float>& from);

// Reads and checks `path` like `bnorm evaluate` (a damaged file: an error naming it).
CheckpointModel load_checkpoint_model(const std::string& path);

// A fresh model of the checkpoint's layers (its state is copied in by whoever uses it):
// what ReplicaEvaluator needs to build per-thread copies. `rewrite` turns the copy
// into the same form as the evaluated model (folded, simulated int8), or is empty.
nn::ReplicaEvaluator::CopyMaker copies_of(
    const std::string& model_name,
    std::function<void(nn::Sequential<float>&)> rewrite = {});

struct ModelScore {
  double loss = 0, accuracy = 0;
  int64_t examples = 0;
  double seconds = 0;
  double examples_per_sec = 0;
};

// Loss and accuracy of `model` (eval mode) over `data`, in batches of batch_size on
// `threads` threads (batch-level threads through `evaluator`, replica_evaluation.h), and
// the pass's time. The evaluator's first pass for a model also builds its copies: a
// caller that compares times makes an untimed pass first.
ModelScore score_model(nn::ReplicaEvaluator& evaluator, nn::Sequential<float>& model,
                       const nn::ReplicaEvaluator::CopyMaker& copies,
                       const data::ImageDataset& data, int64_t batch_size, int threads);

// The logits of every example of `data`, (count, classes) row-major, in batches.
std::vector<float> model_logits(nn::Sequential<float>& model, const data::ImageDataset& data,
                                int64_t batch_size, int64_t* classes);

// A float32 C-order array as NumPy's .npy format version 1.0 (the bytes of the file).
std::string npy_bytes(const std::vector<float>& values, const std::vector<int64_t>& shape);

}  // namespace bnorm::cli
