// Training and evaluation of a named model on an image dataset, epoch by epoch, as
// the seed's experiment does it (d2l's train_ch6): SGD on shuffled mini-batches
// (the last one smaller when the batch size does not divide the set), mean softmax
// cross-entropy, training accuracy counted on the fly in training mode, test
// accuracy in eval mode after each epoch.
//
// Determinism: the model comes from (model, seed), the shuffle of epoch e from
// hash(seed, e), dropout masks from (seed, counter): the same options and thread
// count give the same numbers run after run, and a run resumed from the checkpoint
// of epoch k continues exactly as the unbroken run.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <bnorm/sync_batch_norm.h>

#include "data/dataset.h"
#include "dist/data_parallel.h"
#include "nn/checkpoint.h"
#include "nn/replica_evaluation.h"
#include "nn/sequential.h"
#include "nn/sgd.h"

namespace bnorm::nn {

struct TrainOptions {
  std::string model = "lenet-bn";
  int64_t batch_size = 256;
  SgdOptions sgd{1.0, 0.0, 0.0};
  uint64_t seed = 0;
  bool shuffle = true;  // false: every epoch in the data set's order (to compare with a peer)
};

// Data-parallel training (src/dist/data_parallel.h): K processes, one Trainer each, every
// global batch split across them (remainder to the lowest ranks), the gradients summed
// over them after each backward, so that the K processes train as one process on the
// same global batches. sync_bn: batch norm's statistics are those of the global batch
// (SyncBN); otherwise each process normalizes its own slice (PyTorch DDP's default) and
// the running statistics are rank 0's. Evaluation splits the set across the processes.
struct DataParallel {
  const bnorm_collective* collective = nullptr;  // null: this process alone
  bool sync_bn = false;
  // Steps between checks that every process holds the same parameters (and at the end of
  // every epoch).
  int64_t check_every = 100;
};

struct Evaluation {
  double loss = 0;       // mean cross-entropy
  double accuracy = 0;
  int64_t examples = 0;
  double seconds = 0;
  double examples_per_sec = 0;
};

struct EpochResult {
  int epoch = 0;                  // 1-based
  double train_loss = 0;          // mean over the epoch's examples
  double train_acc = 0;
  double train_seconds = 0;
  double examples_per_sec = 0;    // training examples / training seconds
  Evaluation test;                // empty (examples 0) without a test set
  Evaluation test_population;     // with population statistics, when asked for
  double seconds = 0;             // the whole epoch, evaluation included
};

// Training produced a non-finite loss or non-finite weights (too high a learning
// rate, usually). Thrown by train_epoch at the first such batch; the model is then
// unusable, so the caller must not save it.
class TrainingDiverged : public std::runtime_error {
 public:
  TrainingDiverged(int at_epoch, int64_t at_batch, int64_t of_batches, const std::string& what)
      : std::runtime_error(what), epoch(at_epoch), batch(at_batch), batches(of_batches) {}
  int epoch;                // 1-based
  int64_t batch, batches;   // 1-based batch of this many; batch 0: found after the epoch
};

struct BatchProgress {
  int epoch;
  int64_t done, total;  // examples
  double loss, accuracy;  // running means over the epoch so far
  double seconds;         // since the epoch started
};
using ProgressFn = std::function<void(const BatchProgress&)>;

class Trainer {
 public:
  explicit Trainer(const TrainOptions& options, const DataParallel& parallel = {});

  // Trains one more epoch (epochs_done() + 1) over `train`, then evaluates `test`
  // when it is not null. Throws TrainingDiverged at the first batch whose loss is not
  // finite, or after the epoch if a parameter or statistic is not (epochs_done() is
  // then unchanged).
  // With `population_statistics`, also evaluates `test` with Algorithm 2's statistics
  // (evaluate_with_population_statistics) into EpochResult::test_population.
  EpochResult train_epoch(const data::ImageDataset& train, const data::ImageDataset* test,
                          const ProgressFn& progress = {}, bool population_statistics = false);
  // Runs `steps` training steps on shuffled batches (the benchmark's unit of work);
  // returns examples per second. Changes the model like training does.
  double train_steps(const data::ImageDataset& train, int64_t steps);
  Evaluation evaluate(const data::ImageDataset& data);

  // Evaluates `test` with the batch norm statistics of the paper's Algorithm 2
  // (steps 9-10): averages over the full mini-batches of `train` with the current
  // weights, E[x] = mean of the batch means, Var[x] = m/(m-1) * mean of the batch
  // variances, instead of the moving averages gathered while the weights changed.
  // (PyTorch's momentum=None cumulative average over those batches is exactly that.)
  // The model's own running statistics are restored afterwards: training goes on
  // exactly as without this call. Models without batch norm: the plain evaluation;
  // a training set smaller than one batch: an empty Evaluation (examples 0).
  Evaluation evaluate_with_population_statistics(const data::ImageDataset& train,
                                                 const data::ImageDataset& test);

  int epochs_done() const { return epochs_done_; }
  int rank() const { return parallel_.collective ? parallel_.collective->rank : 0; }
  int processes() const { return parallel_.collective ? parallel_.collective->size : 1; }
  // Collective calls per training step: gradient buckets, and with sync_bn one forward
  // and one backward call per batch norm layer. 0 without data parallelism.
  int64_t collectives_per_step() const;
  // Doubles each process sends per step through those calls.
  int64_t doubles_per_step() const;
  const TrainOptions& options() const { return options_; }
  Sequential<float>& model() { return *model_; }
  Sgd<float>& optimizer() { return *optimizer_; }

  // Model parameters, buffers and counters, the optimizer's momentum, and
  // metadata: format, model, dtype, epoch, seed, batch size, lr, momentum,
  // weight decay.
  Checkpoint to_checkpoint();
  void save(const std::string& path) { write_checkpoint(path, to_checkpoint()); }
  // Restores everything from a checkpoint of the same model; checks every name,
  // dtype and shape before changing anything (CheckpointError otherwise).
  void restore(const Checkpoint& checkpoint, const std::string& source);

  // The options stored in a checkpoint (model, seed, batch size, SGD settings).
  static TrainOptions options_from(const Checkpoint& checkpoint, const std::string& source);

 private:
  // One SGD step on the examples order[begin, end): returns the batch's loss totals.
  void gather(const data::ImageDataset& data, const std::vector<int64_t>& order, int64_t begin,
              int64_t end);
  // One SGD step on the gathered slice of a global batch of `global_batch` examples:
  // returns the global batch's loss sum (and adds its correct count).
  double step(int64_t global_batch, int64_t* correct);
  // Gathers this process's slice of the global batch order[begin, end).
  void gather_slice(const data::ImageDataset& data, const std::vector<int64_t>& order,
                    int64_t begin, int64_t end);
  // Every `check_every` steps and after each epoch: the same parameters everywhere.
  void check_same_model(const std::string& when);
  void set_sync_bn(bool on);
  // The name of the first model or optimizer tensor holding a NaN or an infinity, or
  // an empty string.
  std::string first_non_finite_state();
  void shuffled_order(int64_t count, uint64_t stream, std::vector<int64_t>& order) const;

  TrainOptions options_;
  DataParallel parallel_;
  std::unique_ptr<dist::GradientAllreduce> allreduce_;
  int64_t steps_ = 0;
  std::unique_ptr<Sequential<float>> model_;
  std::unique_ptr<Sgd<float>> optimizer_;
  int epochs_done_ = 0;
  int64_t bench_passes_ = 0;
  ReplicaEvaluator evaluator_;
  Tensor<float> batch_, dlogits_;
  std::vector<int32_t> labels_;
  std::vector<int64_t> order_;
  // Running statistics set aside by the population pass (storage reused).
  std::vector<float> saved_statistics_;
  std::vector<int64_t> saved_counts_;
  std::vector<std::optional<double>> saved_momenta_;
  // The model's parameters and buffers, listed once (their storage lives as long as the
  // model, as the optimizer's spans assume): the divergence check after every epoch reads
  // them without allocating.
  StateLists<float> watched_;
};

}  // namespace bnorm::nn
