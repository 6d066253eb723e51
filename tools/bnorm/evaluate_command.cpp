// bnorm evaluate: test loss and accuracy of a saved checkpoint; with --fold-bn also of
// the same network with batch norm folded away (src/deploy/model_folding.h), how far its
// logits move and how much faster it runs; with --logits the logits themselves (.npy).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <utility>
#include <vector>

#include "cli_common.h"
#include "deploy/model_folding.h"
#include "io/atomic_file.h"
#include "io/output_paths.h"
#include "model_runs.h"
#include "nn/checkpoint.h"
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

// The scores of the unfolded and the folded model on `test`, and their times: an
// untimed pass each (it builds the evaluators' copies), then three timed passes each,
// the two models taking turns; the median pass of each is kept. Same run, same threads.
std::pair<ModelScore, ModelScore> timed_in_turns(nn::Sequential<float>& plain,
                                                 nn::Sequential<float>& folded,
                                                 const nn::TrainOptions& options,
                                                 const data::ImageDataset& test, int threads) {
  const auto plain_copies = copies_of(options.model);
  const auto folded_copies =
      copies_of(options.model, [](nn::Sequential<float>& m) { deploy::fold_batch_norms(m); });
  nn::ReplicaEvaluator evaluators[2];
  nn::Sequential<float>* models[2] = {&plain, &folded};
  const nn::ReplicaEvaluator::CopyMaker* copies[2] = {&plain_copies, &folded_copies};
  ModelScore scores[2];
  std::vector<double> seconds[2];
  for (int pass = 0; pass < 4; ++pass)
    for (int k = 0; k < 2; ++k) {
      const ModelScore s =
          score_model(evaluators[k], *models[k], *copies[k], test, options.batch_size, threads);
      if (pass == 0) scores[k] = s;
      else seconds[k].push_back(s.seconds);
    }
  for (int k = 0; k < 2; ++k) {
    std::sort(seconds[k].begin(), seconds[k].end());
    scores[k].seconds = seconds[k][1];
    scores[k].examples_per_sec =
        scores[k].seconds > 0 ? static_cast<double>(test.count) / scores[k].seconds : 0;
  }
  return {scores[0], scores[1]};
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
  auto plain = eval_copy(options.model, trainer.model());
  std::unique_ptr<nn::Sequential<float>> folded;
  int64_t classes = 0;
  std::vector<float> folded_logits;
  if (a.fold_bn) {
    folded = eval_copy(options.model, trainer.model());
    std::printf("%s", deploy::fold_batch_norms(*folded).summary().c_str());
    const auto [u, f] = timed_in_turns(*plain, *folded, options, d.test, threads);
    folded_logits = model_logits(*folded, d.test, options.batch_size, &classes);
    const double rel = max_relative_difference(
        folded_logits, model_logits(*plain, d.test, options.batch_size, &classes));
    std::printf("folded: test loss %.4f, test acc %.4f  |  %.0f examples/sec vs %.0f unfolded "
                "(speed-up %.2fx, medians of 3 alternating passes)  |  logits max |folded - "
                "unfolded| / max |unfolded| = %.2e\n",
                f.loss, f.accuracy, f.examples_per_sec, u.examples_per_sec,
                u.seconds > 0 && f.seconds > 0 ? u.seconds / f.seconds : 0.0, rel);
  }
  if (!a.logits.empty()) {
    const std::vector<float> logits =
        folded ? std::move(folded_logits) : model_logits(*plain, d.test, options.batch_size, &classes);
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
