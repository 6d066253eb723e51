#include "nn/trainer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <sstream>
#include <stdexcept>

#include <bnorm/bnorm.hpp>

#include "nn/batch_norm_layer.h"
#include "nn/blas.h"
#include "nn/loss.h"
#include "nn/models.h"
#include "nn/random.h"
#include "nn/replica_evaluation.h"

namespace bnorm::nn {

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Random streams drawn from the seed (hash3's second argument).
constexpr uint64_t kShuffleStream = 1;
constexpr uint64_t kBenchShuffleStream = 2;

void check_options(const TrainOptions& o) {
  if (o.batch_size < 1) throw std::invalid_argument("batch_size: expected at least 1");
}

template <class T>
CheckpointTensor tensor_of(const std::string& name, const Shape& shape, std::span<const T> values,
                           DType dtype) {
  CheckpointTensor t{name, dtype, {shape.sizes().begin(), shape.sizes().end()}, {}};
  t.bytes.resize(values.size() * sizeof(T));
  std::memcpy(t.bytes.data(), values.data(), t.bytes.size());  // x86-64: little-endian
  return t;
}

std::string shape_text(const std::vector<int64_t>& sizes) {
  std::string s = "(";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + ")";
}

const std::string& meta(const Checkpoint& c, const std::string& key, const std::string& source) {
  const auto it = c.meta.find(key);
  if (it == c.meta.end()) throw CheckpointError(source + ": missing metadata '" + key + "'");
  return it->second;
}

template <class U>
U parse_number(const Checkpoint& c, const std::string& key, const std::string& source) {
  const std::string& text = meta(c, key, source);
  std::istringstream in(text);
  U v{};
  in >> v;
  if (!in || !in.eof())
    throw CheckpointError(source + ": metadata '" + key + "' is not a number: '" + text + "'");
  return v;
}

std::string exact(double v) {
  std::ostringstream s;
  s.precision(17);
  s << v;
  return s.str();
}

}  // namespace

Trainer::Trainer(const TrainOptions& options, const DataParallel& parallel)
    : options_(options), parallel_(parallel) {
  check_options(options);
  model_ = make_model<float>(options.model, options.seed);
  optimizer_ = std::make_unique<Sgd<float>>(model_->state().parameters, options.sgd);
  watched_ = model_->state();
  if (!parallel_.collective) return;
  if (parallel_.check_every < 1)
    throw std::invalid_argument("DataParallel: check_every must be >= 1");
  set_sync_bn(parallel_.sync_bn);
  // Synchronized batch norm's gradients are already the global ones, and its running
  // statistics already the same everywhere: the all-reduce leaves them out.
  std::vector<const void*> global;
  if (parallel_.sync_bn)
    for (size_t i = 0; i < model_->size(); ++i)
      if (dynamic_cast<BatchNormLayer<float>*>(&model_->layer(i))) {
        StateLists<float> own;
        model_->layer(i).collect_state(own, "");
        for (const auto& p : own.parameters) global.push_back(p.grad.data());
        for (const auto& b : own.buffers) global.push_back(b.value.data());
      }
  const auto is_global = [&](const void* p) {
    return std::find(global.begin(), global.end(), p) != global.end();
  };
  std::vector<std::span<float>> gradients, rank0_values;
  for (const auto& p : watched_.parameters)
    if (!is_global(p.grad.data()))  // the layers' own gradient storage, summed in place
      gradients.emplace_back(const_cast<float*>(p.grad.data()), p.grad.size());
  for (const auto& b : watched_.buffers)
    if (!is_global(b.value.data())) rank0_values.push_back(b.value);
  allreduce_ = std::make_unique<dist::GradientAllreduce>(*parallel_.collective, gradients,
                                                          rank0_values, 2);
}

void Trainer::set_sync_bn(bool on) {
  for (size_t i = 0; i < model_->size(); ++i)
    if (auto* bn = dynamic_cast<BatchNormLayer<float>*>(&model_->layer(i)))
      bn->module().synchronize(on ? parallel_.collective : nullptr);
}

// SyncBN per synchronized layer of c channels: one forward call of 2 + 2c doubles and
// one backward call of 2 + 3c; then the gradient buckets.
int64_t Trainer::collectives_per_step() const {
  if (!allreduce_) return 0;
  int64_t calls = allreduce_->buckets();
  for (size_t i = 0; i < model_->size(); ++i)
    if (auto* bn = dynamic_cast<BatchNormLayer<float>*>(&model_->layer(i)))
      if (bn->module().collective()) calls += 2;
  return calls;
}

int64_t Trainer::doubles_per_step() const {
  if (!allreduce_) return 0;
  int64_t doubles = allreduce_->values();
  for (size_t i = 0; i < model_->size(); ++i)
    if (auto* bn = dynamic_cast<BatchNormLayer<float>*>(&model_->layer(i)))
      if (bn->module().collective())
        doubles += bnorm_sync_batch_norm_forward_doubles(bn->module().num_features()) +
                   bnorm_sync_batch_norm_backward_doubles(bn->module().num_features());
  return doubles;
}

void Trainer::gather_slice(const data::ImageDataset& data, const std::vector<int64_t>& order,
                           int64_t begin, int64_t end) {
  const dist::Slice mine = dist::batch_slice(end - begin, rank(), processes());
  gather(data, order, begin + mine.begin, begin + mine.begin + mine.count);
}

void Trainer::check_same_model(const std::string& when) {
  if (!parallel_.collective) return;
  std::vector<std::span<const float>> arrays;
  for (const auto& p : watched_.parameters) arrays.emplace_back(p.value);
  for (const auto& b : watched_.buffers) arrays.emplace_back(b.value);
  for (const auto& b : optimizer_->state()) arrays.emplace_back(b.value);
  dist::check_same_everywhere(*parallel_.collective, dist::state_fingerprint(arrays), when);
}

void Trainer::shuffled_order(int64_t count, uint64_t stream, std::vector<int64_t>& order) const {
  order.resize(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) order[static_cast<size_t>(i)] = i;
  Rng rng(stream);
  for (int64_t i = count - 1; i > 0; --i)  // Fisher-Yates
    std::swap(order[static_cast<size_t>(i)], order[rng.below(static_cast<uint64_t>(i + 1))]);
}

void Trainer::gather(const data::ImageDataset& data, const std::vector<int64_t>& order,
                     int64_t begin, int64_t end) {
  gather_examples(data, order, begin, end, batch_, labels_);
}

double Trainer::step(int64_t global_batch, int64_t* correct) {
  const Tensor<float>& logits = model_->forward(batch_);
  dlogits_.resize(logits.shape());
  LossTotals totals = softmax_cross_entropy(logits, labels_, &dlogits_, global_batch);
  model_->backward(dlogits_);
  if (allreduce_) {
    // The slices' gradients (of sum(loss) / global_batch) sum to the global batch's.
    double extras[2] = {totals.loss_sum, static_cast<double>(totals.correct)};
    allreduce_->run(extras);
    totals = LossTotals{extras[0], static_cast<int64_t>(extras[1])};
  }
  optimizer_->step();
  ++steps_;
  if (allreduce_ && steps_ % parallel_.check_every == 0)
    check_same_model("after step " + std::to_string(steps_));
  if (correct) *correct += totals.correct;
  return totals.loss_sum;
}

EpochResult Trainer::train_epoch(const data::ImageDataset& train, const data::ImageDataset* test,
                                 const ProgressFn& progress, bool population_statistics) {
  if (train.count < 1) throw std::invalid_argument("train: the training set is empty");
  dist::check_batches_split(train.count, options_.batch_size, processes());
  const auto t0 = Clock::now();
  EpochResult r;
  r.epoch = epochs_done_ + 1;
  model_->set_training(true);
  if (options_.shuffle)
    shuffled_order(train.count, hash3(options_.seed, kShuffleStream, static_cast<uint64_t>(r.epoch)),
                   order_);
  else
    order_.clear();  // gather() reads in order
  double loss_sum = 0;
  int64_t correct = 0;
  const int64_t batches = (train.count + options_.batch_size - 1) / options_.batch_size;
  for (int64_t begin = 0; begin < train.count; begin += options_.batch_size) {
    const int64_t end = std::min(train.count, begin + options_.batch_size);
    gather_slice(train, order_, begin, end);
    const double batch_loss = step(end - begin, &correct);
    if (!std::isfinite(batch_loss)) {
      const int64_t batch = begin / options_.batch_size + 1;
      std::ostringstream what;
      what << "training diverged: the loss of epoch " << r.epoch << ", batch " << batch << " of "
           << batches << " is "
           << (std::isnan(batch_loss) ? std::string("NaN")
                                      : batch_loss > 0 ? "infinite" : "-infinite")
           << " (learning rate " << options_.sgd.lr << ")";
      throw TrainingDiverged(r.epoch, batch, batches, what.str());
    }
    loss_sum += batch_loss;
    if (progress)
      progress({r.epoch, end, train.count, loss_sum / static_cast<double>(end),
                static_cast<double>(correct) / static_cast<double>(end), since(t0)});
  }
  r.train_seconds = since(t0);
  r.train_loss = loss_sum / static_cast<double>(train.count);
  r.train_acc = static_cast<double>(correct) / static_cast<double>(train.count);
  r.examples_per_sec = static_cast<double>(train.count) / r.train_seconds;
  // A finite loss can still come with an infinite weight (or one on its way to NaN):
  // such a model must not be saved either.
  if (const std::string bad = first_non_finite_state(); !bad.empty())
    throw TrainingDiverged(r.epoch, 0, batches,
                           "training diverged: after epoch " + std::to_string(r.epoch) + ", " +
                               bad + " holds a NaN or an infinity (learning rate " +
                               exact(options_.sgd.lr) + ")");
  check_same_model("after epoch " + std::to_string(r.epoch));
  epochs_done_ = r.epoch;
  if (test) r.test = evaluate(*test);
  if (test && population_statistics) r.test_population = evaluate_with_population_statistics(train, *test);
  r.seconds = since(t0);
  return r;
}

double Trainer::train_steps(const data::ImageDataset& train, int64_t steps) {
  if (train.count < options_.batch_size)
    throw std::invalid_argument("bench: the training set is smaller than one batch");
  model_->set_training(true);
  const auto t0 = Clock::now();
  int64_t examples = 0, begin = train.count;  // start with a fresh shuffle
  for (int64_t s = 0; s < steps; ++s) {
    if (begin + options_.batch_size > train.count) {
      shuffled_order(train.count, hash3(options_.seed, kBenchShuffleStream,
                                        static_cast<uint64_t>(bench_passes_++)), order_);
      begin = 0;
    }
    gather_slice(train, order_, begin, begin + options_.batch_size);
    step(options_.batch_size, nullptr);
    begin += options_.batch_size;
    examples += options_.batch_size;
  }
  return static_cast<double>(examples) / since(t0);
}

Evaluation Trainer::evaluate(const data::ImageDataset& data) {
  Evaluation e;
  if (data.count < 1) return e;
  const auto t0 = Clock::now();
  // Each process evaluates its share of the set (all of it alone); the totals are summed.
  // Within a process, each thread takes whole batches (replica_evaluation.h).
  const dist::Slice part = dist::batch_slice(data.count, rank(), processes());
  const auto make_copy = [this] { return make_model<float>(options_.model, 0); };
  const LossTotals part_totals =
      evaluator_.run(*model_, make_copy, data, part.begin, part.begin + part.count,
                     options_.batch_size, engine_threads());
  double loss_sum = part_totals.loss_sum;
  int64_t correct = part_totals.correct;
  if (parallel_.collective) {
    double totals[2] = {loss_sum, static_cast<double>(correct)};
    if (const int rc = parallel_.collective->allreduce_sum_f64(parallel_.collective->context,
                                                               totals, 2); rc != 0)
      throw std::runtime_error("evaluation: collective allreduce_sum_f64 returned " +
                               std::to_string(rc));
    loss_sum = totals[0];
    correct = static_cast<int64_t>(totals[1]);
  }
  e.examples = data.count;
  e.loss = loss_sum / static_cast<double>(data.count);
  e.accuracy = static_cast<double>(correct) / static_cast<double>(data.count);
  e.seconds = since(t0);
  e.examples_per_sec = static_cast<double>(data.count) / e.seconds;
  return e;
}

Evaluation Trainer::evaluate_with_population_statistics(const data::ImageDataset& train,
                                                        const data::ImageDataset& test) {
  std::vector<BatchNorm<float>*> bns;
  for (size_t i = 0; i < model_->size(); ++i)
    if (auto* layer = dynamic_cast<BatchNormLayer<float>*>(&model_->layer(i)))
      if (layer->module().options().track_running_stats) bns.push_back(&layer->module());
  if (bns.empty()) return evaluate(test);  // nothing to recompute: the plain evaluation
  if (train.count < options_.batch_size) return Evaluation{};  // no full batch: not done

  // Set the running statistics aside, and put them back however this ends.
  size_t total = 0;
  for (auto* bn : bns) total += 2 * bn->running_mean().size();
  saved_statistics_.resize(total);
  saved_counts_.resize(bns.size());
  saved_momenta_.resize(bns.size());
  float* at = saved_statistics_.data();
  for (size_t b = 0; b < bns.size(); ++b) {
    at = std::copy(bns[b]->running_mean().begin(), bns[b]->running_mean().end(), at);
    at = std::copy(bns[b]->running_var().begin(), bns[b]->running_var().end(), at);
    saved_counts_[b] = bns[b]->num_batches_tracked();
    saved_momenta_[b] = bns[b]->options().momentum;
  }
  const bool was_training = model_->is_training();
  // Every process runs the same full batches: each computes the statistics alone (the
  // same everywhere), so SyncBN is off for the pass.
  set_sync_bn(false);
  struct Restore {
    Trainer& t;
    std::vector<BatchNorm<float>*>& bns;
    bool training;
    ~Restore() {
      t.set_sync_bn(t.parallel_.sync_bn && t.parallel_.collective);
      const float* from = t.saved_statistics_.data();
      for (size_t b = 0; b < bns.size(); ++b) {
        const auto c = static_cast<std::ptrdiff_t>(bns[b]->running_mean().size());
        std::copy(from, from + c, bns[b]->running_mean().begin());
        std::copy(from + c, from + 2 * c, bns[b]->running_var().begin());
        from += 2 * c;
        bns[b]->set_num_batches_tracked(t.saved_counts_[b]);
        bns[b]->set_momentum(t.saved_momenta_[b]);
      }
      t.model_->set_training(training);
    }
  } restore{*this, bns, was_training};
  for (auto* bn : bns) {
    bn->set_momentum(std::nullopt);
    bn->reset_running_stats();
  }

  // Full batches of the training set, in order, forward only; only batch norm in
  // training mode (so dropout, if any, stays off).
  model_->set_training(false);
  for (size_t i = 0; i < model_->size(); ++i)
    if (dynamic_cast<BatchNormLayer<float>*>(&model_->layer(i))) model_->layer(i).set_training(true);
  const std::vector<int64_t> in_order;
  for (int64_t begin = 0; begin + options_.batch_size <= train.count; begin += options_.batch_size) {
    gather(train, in_order, begin, begin + options_.batch_size);
    model_->forward(batch_);
  }
  model_->set_training(false);
  return evaluate(test);  // then `restore` puts the running statistics back
}

std::string Trainer::first_non_finite_state() {
  const auto finite = [](std::span<const float> v) {
    return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
  };
  for (const auto& p : watched_.parameters)
    if (!finite(p.value)) return "model." + p.name;
  for (const auto& b : watched_.buffers)
    if (!finite(b.value)) return "model." + b.name;
  if (std::string bad = optimizer_->first_non_finite_buffer(); !bad.empty())
    return "optimizer." + bad;
  return "";
}

Checkpoint Trainer::to_checkpoint() {
  Checkpoint c;
  c.meta["format"] = "bnorm-trainer";
  c.meta["bnorm_version"] = bnorm::version();
  c.meta["model"] = options_.model;
  c.meta["dtype"] = "float32";
  c.meta["epoch"] = std::to_string(epochs_done_);
  c.meta["seed"] = std::to_string(options_.seed);
  c.meta["batch_size"] = std::to_string(options_.batch_size);
  c.meta["lr"] = exact(options_.sgd.lr);
  c.meta["momentum"] = exact(options_.sgd.momentum);
  c.meta["weight_decay"] = exact(options_.sgd.weight_decay);
  StateLists<float> s = model_->state();
  for (const auto& p : s.parameters)
    c.tensors.push_back(tensor_of<float>("model." + p.name, p.shape, p.value, DType::float32));
  for (const auto& b : s.buffers)
    c.tensors.push_back(tensor_of<float>("model." + b.name, b.shape, b.value, DType::float32));
  for (const auto& k : s.counters) {
    const int64_t v = k.get();
    c.tensors.push_back(tensor_of<int64_t>("model." + k.name, Shape{}, std::span<const int64_t>(&v, 1),
                                           DType::int64));
  }
  for (const auto& b : optimizer_->state())
    c.tensors.push_back(tensor_of<float>("optimizer." + b.name, b.shape, b.value, DType::float32));
  return c;
}

TrainOptions Trainer::options_from(const Checkpoint& c, const std::string& source) {
  if (c.meta.count("format") == 0 || c.meta.at("format") != "bnorm-trainer")
    throw CheckpointError(source + ": not a training checkpoint (metadata 'format' is not bnorm-trainer)");
  if (meta(c, "dtype", source) != "float32")
    throw CheckpointError(source + ": dtype " + meta(c, "dtype", source) + " (this trainer is float32)");
  TrainOptions o;
  o.model = meta(c, "model", source);
  const auto& names = model_names();
  if (std::find(names.begin(), names.end(), o.model) == names.end()) {
    try {
      make_model<float>(o.model, 0);  // its message lists the models this bnorm knows
    } catch (const std::invalid_argument& e) {
      throw CheckpointError(source + ": bad metadata: " + e.what());
    }
  }
  o.seed = parse_number<uint64_t>(c, "seed", source);
  o.batch_size = parse_number<int64_t>(c, "batch_size", source);
  o.sgd.lr = parse_number<double>(c, "lr", source);
  o.sgd.momentum = parse_number<double>(c, "momentum", source);
  o.sgd.weight_decay = parse_number<double>(c, "weight_decay", source);
  try {  // the same checks a Trainer makes, reported as the file's problem
    check_options(o);
    Sgd<float>({}, o.sgd);
  } catch (const std::invalid_argument& e) {
    throw CheckpointError(source + ": bad settings in the metadata: " + e.what());
  }
  return o;
}

void Trainer::restore(const Checkpoint& c, const std::string& source) {
  if (meta(c, "model", source) != options_.model)
    throw CheckpointError(source + ": the checkpoint holds model '" + meta(c, "model", source) +
                          "', not '" + options_.model + "'");
  const int epoch = parse_number<int>(c, "epoch", source);
  if (epoch < 0) throw CheckpointError(source + ": negative epoch");

  // Every expected tensor, its destination, checked before anything is written.
  struct Target {
    std::string name;
    DType dtype;
    Shape shape;
    void* data;
    size_t bytes;
    const Counter* counter;
  };
  StateLists<float> s = model_->state();
  std::vector<Buffer<float>> opt = optimizer_->state();
  std::vector<Target> targets;
  for (const auto& p : s.parameters)
    targets.push_back({"model." + p.name, DType::float32, p.shape, p.value.data(), p.value.size_bytes(), nullptr});
  for (const auto& b : s.buffers)
    targets.push_back({"model." + b.name, DType::float32, b.shape, b.value.data(), b.value.size_bytes(), nullptr});
  for (const auto& k : s.counters)
    targets.push_back({"model." + k.name, DType::int64, Shape{}, nullptr, 8, &k});
  // Momentum buffers: a checkpoint written without momentum has none (they start at
  // zero, as PyTorch's do); one resumed without momentum ignores them.
  const bool has_momentum_buffers = std::any_of(c.tensors.begin(), c.tensors.end(), [](const CheckpointTensor& t) {
    return t.name.rfind("optimizer.momentum_buffer.", 0) == 0;
  });
  if (has_momentum_buffers)
    for (const auto& b : opt)
      targets.push_back({"optimizer." + b.name, DType::float32, b.shape, b.value.data(), b.value.size_bytes(), nullptr});

  for (const auto& t : targets) {
    const CheckpointTensor* found = c.find(t.name);
    if (!found) throw CheckpointError(source + ": missing tensor " + t.name);
    const std::vector<int64_t> want(t.shape.sizes().begin(), t.shape.sizes().end());
    if (found->dtype != t.dtype || found->sizes != want)
      throw CheckpointError(source + ": tensor " + t.name + " is " + dtype_name(found->dtype) + " " +
                            shape_text(found->sizes) + ", the model expects " +
                            dtype_name(t.dtype) + " " + t.shape.str());
  }
  for (const auto& ct : c.tensors) {
    if (opt.empty() && ct.name.rfind("optimizer.momentum_buffer.", 0) == 0) continue;
    const bool known = std::any_of(targets.begin(), targets.end(),
                                   [&](const Target& t) { return t.name == ct.name; });
    if (!known) throw CheckpointError(source + ": unexpected tensor " + ct.name + " for model " + options_.model);
  }
  for (const auto& t : targets) {
    const CheckpointTensor* found = c.find(t.name);
    if (t.counter) {
      int64_t v = 0;
      std::memcpy(&v, found->bytes.data(), 8);
      if (v < 0) throw CheckpointError(source + ": counter " + t.name + " is negative");
    }
  }
  if (!has_momentum_buffers)
    for (const auto& b : opt) std::fill(b.value.begin(), b.value.end(), 0.0f);
  for (const auto& t : targets) {
    const CheckpointTensor* found = c.find(t.name);
    if (t.counter) {
      int64_t v = 0;
      std::memcpy(&v, found->bytes.data(), 8);
      t.counter->set(v);
    } else {
      std::memcpy(t.data, found->bytes.data(), t.bytes);
    }
  }
  epochs_done_ = epoch;
}

}  // namespace bnorm::nn
