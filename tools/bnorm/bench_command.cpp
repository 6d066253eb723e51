// bnorm bench: two benchmarks.
//   kernels  the kernel table of batch, layer, group, instance and RMS norm: bnorm beside
//            ATen, oneDNN and a memory copy, in GB/s (bench/peers/kernel_table.hpp; ATen
//            and oneDNN come from the peers plugin, loaded only here).
//   train    training and inference throughput of a model on the real data, as one
//            JSON object, for bench/compare_lenet_torch.py to set beside PyTorch.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli_common.h"
#include "kernel_table.hpp"
#include "nn/models.h"
#include "nn/trainer.h"
#include "processes.h"
#include "progress_bar.h"

namespace bnorm::cli {

namespace {

struct TrainBenchArgs {
  std::string model = "lenet-bn";
  int64_t batch_size = 256;
  int64_t steps = 50, warmup = 5;
  double lr = 0;
  int threads = 0;
  bool sync_bn = false;
  bool profile = false;
  DataOptions data;
};

// The per-layer times of a profiled run, as a JSON array: ms per step, each layer's
// forward and backward.
std::string layers_json(nn::Sequential<float>& model, const nn::LayerProfile& p) {
  std::string out = "[";
  char buf[512];
  for (size_t i = 0; i < model.size(); ++i) {
    std::snprintf(buf, sizeof buf, "%s{\"index\": %zu, \"layer\": \"%s\", \"forward_ms\": %.4f, "
                  "\"backward_ms\": %.4f}", i ? ", " : "", i, model.layer(i).describe().c_str(),
                  1e3 * p.forward_seconds[i] / static_cast<double>(std::max<int64_t>(p.forwards, 1)),
                  1e3 * p.backward_seconds[i] / static_cast<double>(std::max<int64_t>(p.backwards, 1)));
    out += buf;
  }
  return out + "]";
}

void run_train_bench(const TrainBenchArgs& a) {
  const int threads = apply_threads(a.threads);
  const data::TrainTest d = load_data(a.data);
  nn::TrainOptions o;
  o.model = a.model;
  o.batch_size = a.batch_size;
  o.sgd.lr = a.lr > 0 ? a.lr : default_lr(a.model);
  if (d.train.count < a.batch_size)
    throw UsageError("--train-examples " + std::to_string(d.train.count) +
                     " is less than one batch (--batch-size " + std::to_string(a.batch_size) + ")");
  const bnorm_collective* collective = job_collective();
  if (job_size() > 1 && a.batch_size < job_size())
    throw UsageError("--batch-size " + std::to_string(a.batch_size) + " cannot give each of the " +
                     std::to_string(job_size()) + " processes an example");
  nn::Trainer trainer(o, nn::DataParallel{collective, a.sync_bn});
  trainer.train_steps(d.train, a.warmup);  // first-touch allocation, caches, BLAS buffers
  const double in_collectives0 = collective_seconds();
  nn::LayerProfile profile;
  if (a.profile) trainer.model().attach_profile(&profile);
  const auto t0 = std::chrono::steady_clock::now();
  const double train = trainer.train_steps(d.train, a.steps);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  trainer.model().attach_profile(nullptr);
  const double in_collectives = collective_seconds() - in_collectives0;
  trainer.evaluate(d.test);  // warm the eval path
  const double inference = trainer.evaluate(d.test).examples_per_sec;
  if (job_rank() != 0) return;
  std::printf("{\"model\": \"%s\", \"threads\": %d, \"batch_size\": %lld, \"steps\": %lld, "
              "\"train_examples_per_sec\": %.1f, \"inference_examples_per_sec\": %.1f, "
              "\"processes\": %d, \"sync_bn\": %s, \"ms_per_step\": %.3f, "
              "\"collective_share\": %.4f, \"collectives_per_step\": %lld, "
              "\"bytes_sent_per_step\": %lld%s%s}\n",
              a.model.c_str(), threads, static_cast<long long>(a.batch_size),
              static_cast<long long>(a.steps), train, inference, job_size(),
              a.sync_bn ? "true" : "false", 1e3 * seconds / static_cast<double>(a.steps),
              in_collectives / seconds, static_cast<long long>(trainer.collectives_per_step()),
              static_cast<long long>(8 * trainer.doubles_per_step()),
              a.profile ? ", \"layers\": " : "",
              a.profile ? layers_json(trainer.model(), profile).c_str() : "");
}

void add_train_bench(CLI::App& bench) {
  auto args = std::make_shared<TrainBenchArgs>();
  CLI::App* sub = bench.add_subcommand(
      "train", "Training and inference examples/sec of a model, as one JSON line");
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
  sub->add_option("--lr", args->lr, "Learning rate (default: the model's)")->check(finite_positive());
  sub->add_flag("--sync-bn", args->sync_bn,
                "Under mpirun: SyncBN (see bnorm train --sync-bn). Under mpirun, with or "
                "without it, the JSON line's collective_share, collectives_per_step and "
                "bytes_sent_per_step say what the processes' communication cost");
  sub->add_flag("--profile", args->profile,
                "Also time every layer's forward and backward over the timed steps: a "
                "\"layers\" array in the JSON line, ms per step (bench/profile_lenet.py sets it "
                "beside PyTorch's)");
  add_threads_option(*sub, args->threads);
  add_data_options(*sub, args->data, true);
  sub->callback([args] { run_train_bench(*args); });
}

// The list options as text, checked by the kernel table's own parsers so that the
// error names the option and the bad item; their defaults are the table's. Each norm's
// shapes have their own option (norm_specs(): --shapes is batch norm's).
struct KernelBenchArgs {
  bnorm_bench::TableOptions table;
  std::string threads, norms, layouts, passes;
  std::array<std::string, bnorm_bench::kNormCount> shapes;
  std::array<CLI::Option*, bnorm_bench::kNormCount> shape_options{};
  CLI::Option* norms_option = nullptr;
  double min_ms = table.min_seconds * 1000.0;

  KernelBenchArgs() {
    const auto add = [](std::string& list, const std::string& item) {
      if (!list.empty()) list += ',';
      list += item;
    };
    for (const int t : table.threads) add(threads, std::to_string(t));
    for (const auto norm : table.norms) add(norms, bnorm_bench::norm_name(norm));
    for (size_t k = 0; k < shapes.size(); ++k)
      shapes[k] = bnorm_bench::problems_text(table.problems[k]);
    for (const auto layout : table.layouts) add(layouts, bnorm_bench::layout_name(layout));
    for (const auto pass : table.passes) add(passes, bnorm_bench::pass_name(pass));
  }
};

template <typename Parse>
CLI::Validator list_of(Parse parse) {
  return CLI::Validator(
      [parse](std::string& text) {
        try {
          parse(text);
          return std::string();
        } catch (const std::invalid_argument& e) {
          return std::string(e.what());
        }
      },
      "");
}

void run_kernel_bench(KernelBenchArgs& a) {
  a.table.threads = bnorm_bench::parse_threads(a.threads);
  std::vector<bnorm_bench::Norm> shapes_given;
  for (const auto& spec : bnorm_bench::norm_specs()) {
    const auto k = static_cast<size_t>(spec.norm);
    a.table.problems[k] = bnorm_bench::parse_problems(spec.norm, a.shapes[k]);
    if (a.shape_options[k]->count() > 0) shapes_given.push_back(spec.norm);
  }
  a.table.norms = a.norms_option->count() > 0 ? bnorm_bench::parse_norms(a.norms)
                                              : bnorm_bench::implied_norms(shapes_given);
  a.table.layouts = bnorm_bench::parse_layouts(a.layouts);
  a.table.passes = bnorm_bench::parse_passes(a.passes);
  a.table.min_seconds = a.min_ms / 1000.0;
  a.table.progress = stderr_is_terminal();
  a.table.program = "bnorm";
  bnorm_bench::run_kernel_table(a.table);
}

void add_kernel_bench(CLI::App& bench) {
  auto args = std::make_shared<KernelBenchArgs>();
  CLI::App* sub = bench.add_subcommand(
      "kernels",
      "The kernel table: GB/s of bnorm's batch, layer, group, instance and RMS norm beside "
      "PyTorch's ATen, oneDNN and a memory copy, per threads x norm x shape x layout x pass");
  sub->footer("Each norm has its own shapes option (--shapes is batch norm's); naming a "
              "norm's shapes without --norms measures only the norms named that way, so "
              "`--shapes 64x64x56x56` alone is the batch norm table. Layer and RMS norm "
              "have one layout (rows, the normalized dim contiguous); only batch norm has "
              "an inference row. ATen has no RMS norm (PyTorch 1.13) and oneDNN 2.6 only "
              "batch and layer norm: those cells show '-'. ATen and oneDNN come from the "
              "peers plugin, which the build makes when libtorch-dev and libdnnl-dev are "
              "installed; BNORM_PEERS_PLUGIN=PATH loads another. Without it their columns "
              "show '-'. Waiting OpenMP threads sleep (OMP_WAIT_POLICY=passive) unless the "
              "environment sets a policy.");
  sub->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  sub->add_option("--threads", args->threads, "Thread counts, comma-separated")
      ->type_name("LIST")
      ->check(list_of(bnorm_bench::parse_threads))
      ->capture_default_str();
  args->norms_option =
      sub->add_option("--norms", args->norms,
                      "Normalizations: batch, layer, group, instance and/or rms (default: "
                      "all, or those whose shapes are given)")
          ->type_name("LIST")
          ->check(list_of(bnorm_bench::parse_norms))
          ->capture_default_str();
  for (const auto& spec : bnorm_bench::norm_specs()) {
    const auto k = static_cast<size_t>(spec.norm);
    const auto norm = spec.norm;
    args->shape_options[k] =
        sub->add_option(spec.shapes_option, args->shapes[k],
                        std::string(spec.name) + " norm shapes, comma-separated: " +
                            spec.shape_syntax)
            ->type_name("LIST")
            ->check(list_of([norm](const std::string& text) {
              return bnorm_bench::parse_problems(norm, text);
            }))
            ->capture_default_str();
  }
  sub->add_option("--layouts", args->layouts, "channels_first and/or channels_last")
      ->type_name("LIST")
      ->check(list_of(bnorm_bench::parse_layouts))
      ->capture_default_str();
  sub->add_option("--passes", args->passes,
                  "forward_train, inference (batch norm only) and/or backward")
      ->type_name("LIST")
      ->check(list_of(bnorm_bench::parse_passes))
      ->capture_default_str();
  sub->add_option("--repeats", args->table.repeats, "Timings per cell; the median is reported")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  sub->add_option("--min-ms", args->min_ms, "Milliseconds each timing lasts at least")
      ->check(finite_between(0.0, 60000.0))
      ->capture_default_str();
  sub->add_option("--json", args->table.json_path, "Also write the cells to FILE as JSON")
      ->type_name("FILE");
  sub->callback([args] { run_kernel_bench(*args); });
}

}  // namespace

void add_bench_command(CLI::App& app) {
  CLI::App* bench = app.add_subcommand(
      "bench", "Benchmarks: `bench kernels` (the normalizations' kernel table) or `bench train` "
               "(a model's training throughput)");
  add_kernel_bench(*bench);
  add_train_bench(*bench);
  bench->require_subcommand(1);  // main() names the two when none is given
}

}  // namespace bnorm::cli
