// bnorm bench: training and inference throughput of a model on the real data, as one
// JSON object, for bench/compare_lenet_torch.py to set beside PyTorch.
#include <cstdio>
#include <memory>

#include "cli_common.h"
#include "nn/models.h"
#include "nn/trainer.h"

namespace bnorm::cli {

namespace {

struct BenchArgs {
  std::string model = "lenet-bn";
  int64_t batch_size = 256;
  int64_t steps = 50, warmup = 5;
  double lr = 0;
  int threads = 0;
  DataOptions data;
};

void run_bench(const BenchArgs& a) {
  const int threads = apply_threads(a.threads);
  const data::TrainTest d = load_data(a.data);
  nn::TrainOptions o;
  o.model = a.model;
  o.batch_size = a.batch_size;
  o.sgd.lr = a.lr > 0 ? a.lr : default_lr(a.model);
  if (d.train.count < a.batch_size)
    throw UsageError("--train-examples " + std::to_string(d.train.count) +
                     " is less than one batch (--batch-size " + std::to_string(a.batch_size) + ")");
  nn::Trainer trainer(o);
  trainer.train_steps(d.train, a.warmup);  // first-touch allocation, caches, BLAS buffers
  const double train = trainer.train_steps(d.train, a.steps);
  trainer.evaluate(d.test);  // warm the eval path
  const double inference = trainer.evaluate(d.test).examples_per_sec;
  std::printf("{\"model\": \"%s\", \"threads\": %d, \"batch_size\": %lld, \"steps\": %lld, "
              "\"train_examples_per_sec\": %.1f, \"inference_examples_per_sec\": %.1f}\n",
              a.model.c_str(), threads, static_cast<long long>(a.batch_size),
              static_cast<long long>(a.steps), train, inference);
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* sub = app.add_subcommand(
      "bench", "Training and inference examples/sec of a model, as one JSON line");
  sub->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  sub->add_option("--model", args->model, "Model (see `bnorm models`)")
      ->check(CLI::IsMember(nn::model_names()))
      ->capture_default_str();
  sub->add_option("--batch-size", args->batch_size, "Examples per batch")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
      ->capture_default_str();
  sub->add_option("--steps", args->steps, "Timed training steps")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30))
      ->capture_default_str();
  sub->add_option("--warmup", args->warmup, "Untimed training steps first")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30))
      ->capture_default_str();
  sub->add_option("--lr", args->lr, "Learning rate (default: the model's)")->check(CLI::PositiveNumber);
  add_threads_option(*sub, args->threads);
  add_data_options(*sub, args->data, true);
  sub->callback([args] { run_bench(*args); });
}

}  // namespace bnorm::cli
