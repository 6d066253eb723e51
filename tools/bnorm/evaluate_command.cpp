// bnorm evaluate: test loss and accuracy of a saved checkpoint; with --fold-bn also of
// the same network with batch norm folded away (src/deploy/model_folding.h), how far its
// logits move and how much faster it runs; with --logits the logits themselves (.npy).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <vector>

#include "cli_common.h"
#include "deploy/model_folding.h"
#include "io/atomic_file.h"
#include "io/output_paths.h"
#include "model_runs.h"
#include "nn/checkpoint.h"
#include "nn/models.h"
#include "nn/trainer.h"

namespace bnorm::cli {

namespace {

struct EvaluateArgs {
  std::string checkpoint;
  int threads = 0;
  int64_t batch_size = 0;
  bool population_stats = false;
  bool fold_bn = false;
  std::string logits;
  bool force = false;
  DataOptions data;
};

// max |a - b| / max |b|: how far the folded logits are from the unfolded ones, relative
// to the logits' own size (one number for the whole set; NaN anywhere gives NaN).
double max_relative_difference(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (std::isnan(d)) return d;
    diff = std::max(diff, d);
    scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

void check_paths(const EvaluateArgs& a) {
  if (a.logits.empty()) return;
  std::vector<io::NamedPath> inputs{{"--checkpoint", a.checkpoint}};
  for (const std::string& file : data_files(a.data)) inputs.push_back({"--data", file});
  const io::NamedPath out{"--logits", a.logits};
  io::check_distinct(inputs, {out});
  io::check_output(out, io::OutputKind::npy, a.force);
}

void run_evaluate(const EvaluateArgs& a) {
  check_paths(a);
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
  if (!a.fold_bn && a.logits.empty()) return;

  // The checkpoint's network as a plain eval-mode model, and (with --fold-bn) its folded form.
  auto plain = nn::make_model<float>(options.model, 0);
  plain->copy_state_from(trainer.model());
  plain->set_training(false);
  std::unique_ptr<nn::Sequential<float>> folded;
  if (a.fold_bn) {
    folded = nn::make_model<float>(options.model, 0);
    folded->copy_state_from(trainer.model());
    folded->set_training(false);
    const deploy::FoldReport report = deploy::fold_batch_norms(*folded);
    std::printf("%s", report.summary().c_str());
    // An untimed pass each (it builds the evaluators' copies), then three timed passes
    // each, the two models taking turns; medians compared: same run, same threads.
    const auto plain_copies = copies_of(options.model);
    const auto folded_copies =
        copies_of(options.model, [](nn::Sequential<float>& m) { deploy::fold_batch_norms(m); });
    nn::ReplicaEvaluator plain_evaluator, folded_evaluator;
    ModelScore u = score_model(plain_evaluator, *plain, plain_copies, d.test, options.batch_size, threads);
    ModelScore f = score_model(folded_evaluator, *folded, folded_copies, d.test, options.batch_size, threads);
    std::vector<double> u_seconds, f_seconds;
    for (int r = 0; r < 3; ++r) {
      u_seconds.push_back(score_model(plain_evaluator, *plain, plain_copies, d.test,
                                      options.batch_size, threads).seconds);
      f_seconds.push_back(score_model(folded_evaluator, *folded, folded_copies, d.test,
                                      options.batch_size, threads).seconds);
    }
    std::sort(u_seconds.begin(), u_seconds.end());
    std::sort(f_seconds.begin(), f_seconds.end());
    u.seconds = u_seconds[1];
    f.seconds = f_seconds[1];
    const double n = static_cast<double>(d.test.count);
    u.examples_per_sec = u.seconds > 0 ? n / u.seconds : 0;
    f.examples_per_sec = f.seconds > 0 ? n / f.seconds : 0;
    int64_t classes = 0;
    const double rel = max_relative_difference(
        model_logits(*folded, d.test, options.batch_size, &classes),
        model_logits(*plain, d.test, options.batch_size, &classes));
    std::printf("folded: test loss %.4f, test acc %.4f  |  %.0f examples/sec vs %.0f unfolded "
                "(speed-up %.2fx, medians of 3 alternating passes)  |  logits max |folded - unfolded| / max "
                "|unfolded| = %.2e\n",
                f.loss, f.accuracy, f.examples_per_sec, u.examples_per_sec,
                u.seconds > 0 && f.seconds > 0 ? u.seconds / f.seconds : 0.0, rel);
  }
  if (!a.logits.empty()) {
    nn::Sequential<float>& model = folded ? *folded : *plain;
    int64_t classes = 0;
    const std::vector<float> logits = model_logits(model, d.test, options.batch_size, &classes);
    io::write_file_atomically(a.logits, npy_bytes(logits, {d.test.count, classes}));
    std::printf("logits of %lld test examples%s -> %s\n", static_cast<long long>(d.test.count),
                folded ? " (folded)" : "", a.logits.c_str());
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
  sub->add_flag("--fold-bn", args->fold_bn,
                "Also evaluate the network with batch norm folded into the convolution or "
                "linear layer before it (the rest kept as a per-channel affine layer): which "
                "layers folded, accuracy, speed-up and how far the logits moved");
  sub->add_option("--logits", args->logits,
                  "Write the test logits, float32 (examples, 10), as a NumPy .npy file (of "
                  "the folded network with --fold-bn)");
  sub->add_flag("--force", args->force,
                "Replace an existing --logits file that is not a NumPy array");
  add_threads_option(*sub, args->threads);
  add_data_options(*sub, args->data, true);
  sub->callback([args] { run_evaluate(*args); });
}

}  // namespace bnorm::cli
