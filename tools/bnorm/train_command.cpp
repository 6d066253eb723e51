// bnorm train: the seed's experiment for one model, epoch by epoch.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>
#include <fstream>
#include <memory>
#include <optional>

#include <bnorm/bnorm.hpp>

#include "cli_common.h"
#include "io/atomic_file.h"
#include "io/output_paths.h"
#include "dist/data_parallel.h"
#include "nn/checkpoint.h"
#include "nn/models.h"
#include "nn/trainer.h"
#include "processes.h"
#include "progress_bar.h"

namespace bnorm::cli {

namespace {

// The checkpoint metadata key holding every epoch's metrics line so far.
constexpr const char* kMetricsKey = "metrics_jsonl";

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
  bool force = false;
  bool no_progress = false;
  bool population_stats = false;
  bool no_shuffle = false;
  bool sync_bn = false;
  // Which options the user gave (the rest come from --resume's checkpoint).
  CLI::Option *model_opt = nullptr, *lr_opt = nullptr, *batch_opt = nullptr,
              *momentum_opt = nullptr, *wd_opt = nullptr, *seed_opt = nullptr;
};

// A JSON number; a diverged run's NaN or infinity as the tokens Python's json reads.
std::string json_number(double v, const char* format = "%.6f") {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string json_line(const std::string& model, const nn::EpochResult& r, const nn::TrainOptions& o,
                      int threads, bool sync_bn) {
  std::ostringstream j;
  j << "{\"model\": \"" << model << "\", \"epoch\": " << r.epoch
    << ", \"train_loss\": " << json_number(r.train_loss)
    << ", \"train_acc\": " << json_number(r.train_acc)
    << ", \"test_loss\": " << json_number(r.test.loss)
    << ", \"test_acc\": " << json_number(r.test.accuracy);
  if (r.test_population.examples > 0)
    j << ", \"test_loss_population\": " << json_number(r.test_population.loss)
      << ", \"test_acc_population\": " << json_number(r.test_population.accuracy);
  j << ", \"examples_per_sec\": " << json_number(r.examples_per_sec, "%.1f")
    << ", \"test_examples_per_sec\": " << json_number(r.test.examples_per_sec, "%.1f")
    << ", \"train_seconds\": " << json_number(r.train_seconds, "%.3f")
    << ", \"seconds\": " << json_number(r.seconds, "%.3f")
    << ", \"lr\": " << json_number(o.sgd.lr, "%.17g") << ", \"batch_size\": " << o.batch_size
    << ", \"momentum\": " << json_number(o.sgd.momentum, "%.17g")
    << ", \"weight_decay\": " << json_number(o.sgd.weight_decay, "%.17g")
    << ", \"seed\": " << o.seed << ", \"threads\": " << threads;
  // A data-parallel run says so (a single process's line stays as it always was).
  if (job_size() > 1)
    j << ", \"processes\": " << job_size() << ", \"sync_bn\": " << (sync_bn ? "true" : "false");
  j << "}";
  return j.str();
}

// The metrics lines a resumed run starts from. Checkpoints keep every epoch's line
// (kMetricsKey), so the metrics file is rebuilt from the checkpoint: after a crash
// between saving the checkpoint and rewriting the metrics file, the epoch is there
// exactly once. An existing --metrics file must agree with those lines as far as it
// goes (it is this run's file, maybe behind or ahead of an older checkpoint), or it is
// another run's and is replaced only with --force.
// A checkpoint from an older bnorm (no kMetricsKey) keeps the existing file's whole
// lines of this model up to its epoch, each epoch once, and says which are missing.
std::string resumed_metrics(const nn::Checkpoint& c, const TrainArgs& a, const std::string& model,
                            int epoch) {
  std::vector<std::string> existing;
  {
    std::ifstream in(a.metrics.empty() ? std::string() : a.metrics);
    for (std::string line; std::getline(in, line);) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (!line.empty()) existing.push_back(line);
    }
  }
  if (const auto it = c.meta.find(kMetricsKey); it != c.meta.end()) {
    std::istringstream lines(it->second);
    size_t i = 0;
    for (std::string line; std::getline(lines, line) && i < existing.size(); ++i)
      if (line != existing[i] && !a.force)
        throw UsageError("--metrics " + a.metrics + ": line " + std::to_string(i + 1) +
                         " is not the line the checkpoint " + a.resume +
                         " has for that epoch, so the file is another run's; refusing to "
                         "replace it (--force replaces it anyway)");
    return it->second;
  }
  std::vector<bool> have(static_cast<size_t>(epoch) + 1, false);
  std::string kept;
  const std::string this_model = "{\"model\": \"" + model + "\", \"epoch\": ";
  for (const std::string& line : existing) {
    if (line.rfind(this_model, 0) != 0 || line.back() != '}') continue;  // torn, or not ours
    const int e = std::atoi(line.c_str() + this_model.size());
    if (e < 1 || e > epoch || have[static_cast<size_t>(e)]) continue;
    have[static_cast<size_t>(e)] = true;
    kept += line + "\n";
  }
  std::string missing;
  for (int e = 1; e <= epoch; ++e)
    if (!have[static_cast<size_t>(e)]) missing += (missing.empty() ? "" : ", ") + std::to_string(e);
  if (!missing.empty() && !a.metrics.empty())
    std::fprintf(stderr,
                 "bnorm: warning: --metrics %s: no line for epoch(s) %s; the checkpoint %s "
                 "comes from an older bnorm that did not keep them\n",
                 a.metrics.c_str(), missing.c_str(), a.resume.c_str());
  return kept;
}

// Every path checked before anything is read, trained or written (src/io/output_paths.h):
// the outputs are regular files or new ones, hold what bnorm writes unless --force, and
// none is the same file as another output, the resumed checkpoint or a data file. The
// one shared file allowed: --checkpoint may be --resume (continue in place; the
// checkpoint is read whole before the first write).
void check_paths(const TrainArgs& a) {
  std::vector<io::NamedPath> inputs, outputs;
  for (const std::string& file : data_files(a.data)) inputs.push_back({"--data", file});
  if (!a.resume.empty()) inputs.push_back({"--resume", a.resume});
  if (!a.checkpoint.empty()) {
    outputs.push_back({"--checkpoint", a.checkpoint});
    io::check_output(outputs.back(), io::OutputKind::checkpoint, a.force);
  }
  if (!a.metrics.empty()) {
    outputs.push_back({"--metrics", a.metrics});
    io::check_output(outputs.back(), io::OutputKind::metrics, a.force);
  }
  io::check_distinct(inputs, outputs, {{"--checkpoint", "--resume"}});
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
  o.shuffle = !a.no_shuffle;
  if (*a.lr_opt) o.sgd.lr = a.lr;
  if (*a.batch_opt || !resumed) o.batch_size = a.batch_size;
  if (*a.momentum_opt || !resumed) o.sgd.momentum = a.momentum;
  if (*a.wd_opt || !resumed) o.sgd.weight_decay = a.weight_decay;
  return o;
}

// Every process of an mpirun job must train the same thing: these are compared at start.
std::vector<std::pair<std::string, std::string>> job_settings(const TrainArgs& a,
                                                              const nn::TrainOptions& o,
                                                              const nn::Checkpoint* resumed) {
  const auto text = [](auto v) {
    std::ostringstream s;
    s.precision(17);
    s << v;
    return s.str();
  };
  return {{"bnorm version", bnorm::version()},
          {"--model", o.model},
          {"--epochs", text(a.epochs)},
          {"--lr", text(o.sgd.lr)},
          {"--batch-size", text(o.batch_size)},
          {"--momentum", text(o.sgd.momentum)},
          {"--weight-decay", text(o.sgd.weight_decay)},
          {"--seed", text(o.seed)},
          {"--sync-bn", text(a.sync_bn)},
          {"--no-shuffle", text(a.no_shuffle)},
          {"--population-stats", text(a.population_stats)},
          {"--data", a.data.dir},
          {"--train-examples", text(a.data.train_examples)},
          {"--test-examples", text(a.data.test_examples)},
          {"--resume (the checkpoint's epoch)",
           resumed ? resumed->meta.count("epoch") ? resumed->meta.at("epoch") : "?" : "none"}};
}

void run_train(const TrainArgs& a) {
  // Only rank 0 of an mpirun job writes and prints; the others train beside it.
  const bool writer = job_rank() == 0;
  if (writer) check_paths(a);
  std::optional<nn::Checkpoint> resumed;
  if (!a.resume.empty()) resumed = nn::read_checkpoint(a.resume);
  const nn::TrainOptions options = resolve_options(a, resumed ? &*resumed : nullptr);
  const int threads = apply_threads(a.threads);
  const bnorm_collective* collective = job_collective();
  const int processes = job_size();
  if (collective) dist::check_same_settings(*collective, job_settings(a, options, resumed ? &*resumed : nullptr));

  nn::Trainer trainer(options, nn::DataParallel{collective, a.sync_bn});
  if (resumed) trainer.restore(*resumed, a.resume);
  if (trainer.epochs_done() >= a.epochs)
    throw UsageError("the checkpoint " + a.resume + " has already trained " +
                     std::to_string(trainer.epochs_done()) + " epochs; --epochs " +
                     std::to_string(a.epochs) + " asks for no more");

  const bool has_bn = options.model.size() > 3 && options.model.ends_with("-bn");
  if (has_bn && options.batch_size == 1)
    throw UsageError("--batch-size 1 with " + options.model +
                     ": batch norm needs more than one value per channel in a training batch "
                     "(use --batch-size 2 or more, or a model without -bn)");
  // The metrics lines the run starts from, checked against an existing --metrics file
  // before anything is trained or written.
  std::string metrics_lines =
      resumed ? resumed_metrics(*resumed, a, options.model, trainer.epochs_done()) : "";

  const data::TrainTest data = load_data(a.data);
  if (has_bn && (data.train.count % options.batch_size == 1 || data.train.count == 1))
    throw UsageError("--batch-size " + std::to_string(options.batch_size) + " with " +
                     std::to_string(data.train.count) +
                     " training examples leaves a last batch of 1, and batch norm needs more "
                     "than one value per channel (change --batch-size or --train-examples)");
  if (processes > 1) {
    try {
      dist::check_batches_split(data.train.count, options.batch_size, processes);
    } catch (const std::invalid_argument& e) {
      throw UsageError(e.what());  // a bad combination of arguments: exit status 2
    }
    const int64_t smallest = dist::smallest_batch(data.train.count, options.batch_size);
    // Per-process batch norm normalizes each slice alone: the smallest slice needs two.
    if (has_bn && !a.sync_bn && smallest / processes < 2)
      throw UsageError("a batch of " + std::to_string(smallest) + " over " + std::to_string(processes) +
                       " processes leaves a slice of 1 example, and per-process batch norm needs "
                       "more than one value per channel (use --sync-bn, a larger --batch-size or "
                       "fewer processes)");
  }

  // Temporaries left by a killed run are removed (the files they were for are whole),
  // never one of this run's own files, whatever its name.
  if (writer)
    for (const std::string& out : {a.checkpoint, a.metrics})
      if (!out.empty()) io::remove_stale_temporaries(out, {a.resume, a.checkpoint, a.metrics});
  // Every epoch's metrics line so far. The checkpoint carries them and the metrics file
  // is rewritten whole from them, so each epoch is in it exactly once, whatever moment
  // a crash picked.
  if (writer && !a.metrics.empty()) io::write_file_atomically(a.metrics, metrics_lines);

  const std::string job =
      processes > 1 ? ", " + std::to_string(processes) + " processes (" +
                          (a.sync_bn ? "SyncBN" : "per-process batch norm") + ")"
                    : "";
  if (writer) {
    std::printf("%s: %lld parameters; %lld train / %lld test examples; batch %lld, lr %g, "
                "momentum %g, weight decay %g, seed %llu, threads %d%s%s\n",
                options.model.c_str(), static_cast<long long>(trainer.model().parameter_count()),
                static_cast<long long>(data.train.count), static_cast<long long>(data.test.count),
                static_cast<long long>(options.batch_size), options.sgd.lr, options.sgd.momentum,
                options.sgd.weight_decay, static_cast<unsigned long long>(options.seed), threads,
                job.c_str(),
                resumed ? (", resumed after epoch " + std::to_string(trainer.epochs_done())).c_str()
                        : "");
    std::fflush(stdout);
  }

  int saved_epoch = 0;  // the last epoch this run saved to --checkpoint
  ProgressBar bar(a.epochs, writer && !a.no_progress && stderr_is_terminal());
  while (trainer.epochs_done() < a.epochs) {
    nn::EpochResult r;
    try {
      r = trainer.train_epoch(
          data.train, &data.test, [&](const nn::BatchProgress& p) { bar.update(p); },
          a.population_stats);
    } catch (const nn::TrainingDiverged& e) {
      bar.clear();
      // Name only a checkpoint that holds the last good epoch: one this run saved, or
      // the one it resumed from (unchanged unless it was saved over).
      std::string kept = "nothing of epoch " + std::to_string(e.epoch) + " was saved";
      if (saved_epoch > 0)
        kept += "; " + a.checkpoint + " keeps epoch " + std::to_string(saved_epoch);
      else if (resumed)
        kept += "; " + a.resume + " keeps epoch " + std::to_string(e.epoch - 1);
      throw std::runtime_error(std::string(e.what()) + "; stopped (" + kept +
                               "). Try a smaller --lr");
    }
    bar.clear();
    char population[64] = "";
    if (r.test_population.examples > 0)
      std::snprintf(population, sizeof population, " (population stats %.3f)",
                    r.test_population.accuracy);
    if (writer) {
      std::printf("epoch %2d/%d  loss %.3f, train acc %.3f, test acc %.3f%s  |  %.0f examples/sec "
                  "(test %.0f examples/sec), %.1f s\n",
                  r.epoch, a.epochs, r.train_loss, r.train_acc, r.test.accuracy, population,
                  r.examples_per_sec, r.test.examples_per_sec, r.seconds);
      std::fflush(stdout);
    }
    metrics_lines += json_line(options.model, r, options, threads, a.sync_bn) + "\n";
    if (!writer) continue;
    // The checkpoint first, carrying the metrics: a crash before the metrics file is
    // rewritten loses nothing, since --resume rebuilds that file from the checkpoint.
    if (!a.checkpoint.empty()) {
      nn::Checkpoint c = trainer.to_checkpoint();
      c.meta[kMetricsKey] = metrics_lines;
      nn::write_checkpoint(a.checkpoint, c);
      saved_epoch = r.epoch;
    }
    if (!a.metrics.empty()) io::write_file_atomically(a.metrics, metrics_lines);
  }
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto args = std::make_shared<TrainArgs>();
  CLI::App* sub = app.add_subcommand(
      "train", "Train a model on Fashion-MNIST (or another MNIST-style set), epoch by epoch");
  // A repeated option takes its last value: scripts/experiment passes the seed's
  // settings and then the user's, which win.
  sub->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  args->model_opt = sub->add_option("--model", args->model, "Model to train (see `bnorm models`)")
                        ->check(CLI::IsMember(nn::model_names()))
                        ->capture_default_str();
  sub->add_option("--epochs", args->epochs, "Total epochs (with --resume: including those done)")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  args->lr_opt = sub->add_option(
      "--lr", args->lr,
      "Learning rate (default: 0.9 for lenet, 1.0 for lenet-bn as in the seed and for the "
      "other normalized LeNets; 0.1 for mlp and mlp-*, "
      "0.05 for vgg)")->check(finite_positive());
  args->batch_opt = sub->add_option("--batch-size", args->batch_size, "Examples per batch")
                        ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
                        ->capture_default_str();
  args->momentum_opt = sub->add_option("--momentum", args->momentum, "SGD momentum, in [0, 1)")
                           ->check(finite_at_least_below(0.0, 1.0))
                           ->capture_default_str();
  args->wd_opt = sub->add_option("--weight-decay", args->weight_decay, "L2 weight decay")
                     ->check(finite_non_negative())
                     ->capture_default_str();
  args->seed_opt = sub->add_option("--seed", args->seed, "Seed for initialization, shuffling and dropout")
                       ->capture_default_str();
  add_threads_option(*sub, args->threads);
  add_data_options(*sub, args->data, true);
  sub->add_option("--metrics", args->metrics,
                  "Write one JSON object per epoch per line to FILE, rewritten whole after "
                  "every epoch (on --resume: the checkpoint's epochs, then the new ones)");
  sub->add_option("--checkpoint", args->checkpoint,
                  "Save the model, optimizer and metrics to FILE after every epoch (atomically; "
                  "FILE may be the --resume file)");
  sub->add_option("--resume", args->resume,
                  "Continue from a checkpoint up to --epochs; its model, seed and settings "
                  "apply unless given")->check(CLI::ExistingFile);
  sub->add_flag("--force", args->force,
                "Replace an existing --checkpoint or --metrics file even if it is not one "
                "bnorm wrote (links, directories and devices are refused anyway)");
  sub->add_flag("--no-progress", args->no_progress, "No progress bar (it shows only on a terminal)");
  sub->add_flag("--no-shuffle", args->no_shuffle,
                "Train on the examples in file order every epoch (to compare step by step "
                "with another framework)");
  sub->add_flag("--sync-bn", args->sync_bn,
                "Under mpirun: batch norm normalizes with the statistics of the whole global "
                "batch (SyncBN); without it each process uses its own slice's, as PyTorch DDP "
                "does. --batch-size is the global batch either way, split across the processes");
  sub->add_flag("--population-stats", args->population_stats,
                "Also report test accuracy with batch norm's population statistics (the "
                "paper's Algorithm 2: averages over the training batches with the final "
                "weights) beside the moving averages; training is unchanged");
  sub->callback([args] { run_train(*args); });
}

}  // namespace bnorm::cli
