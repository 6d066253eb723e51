// bnorm evaluate: test loss and accuracy of a saved checkpoint.
#include <cstdio>
#include <memory>

#include "cli_common.h"
#include "nn/checkpoint.h"
#include "nn/trainer.h"

namespace bnorm::cli {

namespace {

struct EvaluateArgs {
  std::string checkpoint;
  int threads = 0;
  int64_t batch_size = 0;
  bool population_stats = false;
  DataOptions data;
};

void run_evaluate(const EvaluateArgs& a) {
  const nn::Checkpoint c = nn::read_checkpoint(a.checkpoint);
  nn::TrainOptions options = nn::Trainer::options_from(c, a.checkpoint);
  if (a.batch_size > 0) options.batch_size = a.batch_size;
  const int threads = apply_threads(a.threads);
  nn::Trainer trainer(options);
  trainer.restore(c, a.checkpoint);
  const data::TrainTest d = load_data(a.data);
  const nn::Evaluation e = trainer.evaluate(d.test);
  std::printf("%s after %d epochs (%s): test loss %.4f, test acc %.4f on %lld examples  |  "
              "%.0f examples/sec, %.2f s, threads %d\n",
              options.model.c_str(), trainer.epochs_done(), a.checkpoint.c_str(), e.loss,
              e.accuracy, static_cast<long long>(e.examples), e.examples_per_sec, e.seconds,
              threads);
  if (a.population_stats) {
    const nn::Evaluation p = trainer.evaluate_with_population_statistics(d.train, d.test);
    if (p.examples == 0)
      throw UsageError("--population-stats needs at least one full batch of training examples");
    std::printf("with population statistics (Algorithm 2, %lld training examples): test loss "
                "%.4f, test acc %.4f\n",
                static_cast<long long>(d.train.count), p.loss, p.accuracy);
  }
}

}  // namespace

void add_evaluate_command(CLI::App& app) {
  auto args = std::make_shared<EvaluateArgs>();
  CLI::App* sub = app.add_subcommand("evaluate", "Test loss and accuracy of a checkpoint");
  sub->add_option("--checkpoint", args->checkpoint, "A checkpoint written by `bnorm train`")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_option("--batch-size", args->batch_size, "Examples per batch (0: the checkpoint's)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 20))
      ->capture_default_str();
  sub->add_flag("--population-stats", args->population_stats,
                "Also evaluate with batch norm's population statistics over the training set "
                "(the paper's Algorithm 2)");
  add_threads_option(*sub, args->threads);
  add_data_options(*sub, args->data, true);
  sub->callback([args] { run_evaluate(*args); });
}

}  // namespace bnorm::cli
