// bnorm train: the seed's experiment for one model, epoch by epoch.
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>

#include "cli_common.h"
#include "nn/checkpoint.h"
#include "nn/models.h"
#include "nn/trainer.h"
#include "progress_bar.h"

namespace bnorm::cli {

namespace {

struct TrainArgs {
  std::string model = "lenet-bn";
  int epochs = 10;
  double lr = 0;  // 0: the model's default
  int64_t batch_size = 256;
  double momentum = 0, weight_decay = 0;
  uint64_t seed = 0;
  int threads = 0;
  DataOptions data;
  std::string metrics, checkpoint, resume;
  bool no_progress = false;
  // Which options the user gave (the rest come from --resume's checkpoint).
  CLI::Option *model_opt = nullptr, *lr_opt = nullptr, *batch_opt = nullptr,
              *momentum_opt = nullptr, *wd_opt = nullptr, *seed_opt = nullptr;
};

std::string json_line(const std::string& model, const nn::EpochResult& r, const nn::TrainOptions& o,
                      int threads) {
  char buf[768];
  std::snprintf(buf, sizeof buf,
                "{\"model\": \"%s\", \"epoch\": %d, \"train_loss\": %.6f, \"train_acc\": %.6f, "
                "\"test_loss\": %.6f, \"test_acc\": %.6f, \"examples_per_sec\": %.1f, "
                "\"test_examples_per_sec\": %.1f, \"train_seconds\": %.3f, \"seconds\": %.3f, "
                "\"lr\": %.17g, \"batch_size\": %lld, \"momentum\": %.17g, \"weight_decay\": %.17g, "
                "\"seed\": %llu, \"threads\": %d}",
                model.c_str(), r.epoch, r.train_loss, r.train_acc, r.test.loss, r.test.accuracy,
                r.examples_per_sec, r.test.examples_per_sec, r.train_seconds, r.seconds, o.sgd.lr,
                static_cast<long long>(o.batch_size), o.sgd.momentum, o.sgd.weight_decay,
                static_cast<unsigned long long>(o.seed), threads);
  return buf;
}

nn::TrainOptions resolve_options(const TrainArgs& a, const nn::Checkpoint* resumed) {
  nn::TrainOptions o;
  if (resumed) {
    o = nn::Trainer::options_from(*resumed, a.resume);
    if (*a.model_opt && a.model != o.model)
      throw UsageError("--model " + a.model + " does not match the checkpoint's model " + o.model +
                       " (" + a.resume + ")");
    if (*a.seed_opt && a.seed != o.seed)
      throw UsageError("--seed differs from the checkpoint's seed " + std::to_string(o.seed) +
                       "; a resumed run keeps its seed");
  } else {
    o.model = a.model;
    o.seed = a.seed;
    o.sgd.lr = default_lr(a.model);
  }
  if (*a.lr_opt) o.sgd.lr = a.lr;
  if (*a.batch_opt || !resumed) o.batch_size = a.batch_size;
  if (*a.momentum_opt || !resumed) o.sgd.momentum = a.momentum;
  if (*a.wd_opt || !resumed) o.sgd.weight_decay = a.weight_decay;
  return o;
}

void run_train(const TrainArgs& a) {
  std::optional<nn::Checkpoint> resumed;
  if (!a.resume.empty()) resumed = nn::read_checkpoint(a.resume);
  const nn::TrainOptions options = resolve_options(a, resumed ? &*resumed : nullptr);
  const int threads = apply_threads(a.threads);

  nn::Trainer trainer(options);
  if (resumed) trainer.restore(*resumed, a.resume);
  if (trainer.epochs_done() >= a.epochs)
    throw UsageError("the checkpoint " + a.resume + " has already trained " +
                     std::to_string(trainer.epochs_done()) + " epochs; --epochs " +
                     std::to_string(a.epochs) + " asks for no more");

  const data::TrainTest data = load_data(a.data);
  std::unique_ptr<std::ofstream> metrics;
  if (!a.metrics.empty()) {
    // A resumed run appends its epochs to the metrics of the run it continues.
    metrics = std::make_unique<std::ofstream>(
        a.metrics, resumed ? std::ios::app : std::ios::trunc);
    if (!*metrics) throw std::runtime_error("--metrics: cannot write " + a.metrics);
  }

  std::printf("%s: %lld parameters; %lld train / %lld test examples; batch %lld, lr %g, "
              "momentum %g, weight decay %g, seed %llu, %d threads%s\n",
              options.model.c_str(), static_cast<long long>(trainer.model().parameter_count()),
              static_cast<long long>(data.train.count), static_cast<long long>(data.test.count),
              static_cast<long long>(options.batch_size), options.sgd.lr, options.sgd.momentum,
              options.sgd.weight_decay, static_cast<unsigned long long>(options.seed), threads,
              resumed ? (", resumed after epoch " + std::to_string(trainer.epochs_done())).c_str()
                      : "");
  std::fflush(stdout);

  ProgressBar bar(a.epochs, !a.no_progress && stderr_is_terminal());
  while (trainer.epochs_done() < a.epochs) {
    const nn::EpochResult r = trainer.train_epoch(
        data.train, &data.test, [&](const nn::BatchProgress& p) { bar.update(p); });
    bar.clear();
    std::printf("epoch %2d/%d  loss %.3f, train acc %.3f, test acc %.3f  |  %.0f examples/sec "
                "(test %.0f examples/sec), %.1f s\n",
                r.epoch, a.epochs, r.train_loss, r.train_acc, r.test.accuracy, r.examples_per_sec,
                r.test.examples_per_sec, r.seconds);
    std::fflush(stdout);
    if (metrics) {
      *metrics << json_line(options.model, r, options, threads) << "\n";
      metrics->flush();
      if (!*metrics) throw std::runtime_error("--metrics: writing " + a.metrics + " failed");
    }
    if (!a.checkpoint.empty()) trainer.save(a.checkpoint);
  }
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto args = std::make_shared<TrainArgs>();
  CLI::App* sub = app.add_subcommand(
      "train", "Train a model on Fashion-MNIST (or another MNIST-style set), epoch by epoch");
  args->model_opt = sub->add_option("--model", args->model, "Model to train (see `bnorm models`)")
                        ->check(CLI::IsMember(nn::model_names()))
                        ->capture_default_str();
  sub->add_option("--epochs", args->epochs, "Total epochs (with --resume: including those done)")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  args->lr_opt = sub->add_option(
      "--lr", args->lr,
      "Learning rate (default: 0.9 for lenet, 1.0 for lenet-bn as in the seed; 0.1 for mlp, "
      "0.05 for vgg)")->check(CLI::PositiveNumber);
  args->batch_opt = sub->add_option("--batch-size", args->batch_size, "Examples per batch")
                        ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
                        ->capture_default_str();
  args->momentum_opt = sub->add_option("--momentum", args->momentum, "SGD momentum, in [0, 1)")
                           ->check(CLI::Range(0.0, 0.999999))
                           ->capture_default_str();
  args->wd_opt = sub->add_option("--weight-decay", args->weight_decay, "L2 weight decay")
                     ->check(CLI::NonNegativeNumber)
                     ->capture_default_str();
  args->seed_opt = sub->add_option("--seed", args->seed, "Seed for initialization, shuffling and dropout")
                       ->capture_default_str();
  add_threads_option(*sub, args->threads);
  add_data_options(*sub, args->data, true);
  sub->add_option("--metrics", args->metrics,
                  "Write one JSON object per epoch per line to FILE (appended to on --resume)");
  sub->add_option("--checkpoint", args->checkpoint,
                  "Save the model and optimizer to FILE after every epoch (atomically)");
  sub->add_option("--resume", args->resume,
                  "Continue from a checkpoint up to --epochs; its model, seed and settings "
                  "apply unless given")->check(CLI::ExistingFile);
  sub->add_flag("--no-progress", args->no_progress, "No progress bar (it shows only on a terminal)");
  sub->callback([args] { run_train(*args); });
}

}  // namespace bnorm::cli
