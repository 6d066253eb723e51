#include "cli_common.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <sstream>

#include "nn/blas.h"

namespace bnorm::cli {

void add_data_options(CLI::App& app, DataOptions& o, bool train_set) {
  app.add_option("--data", o.dir,
                 "Directory with the four MNIST-style IDX files (gzipped or not)")
      ->capture_default_str();
  if (train_set)
    app.add_option("--train-examples", o.train_examples,
                   "Use only the first N training examples (0: all)")
        ->check(CLI::NonNegativeNumber);
  app.add_option("--test-examples", o.test_examples, "Use only the first N test examples (0: all)")
      ->check(CLI::NonNegativeNumber);
}

std::vector<std::string> data_files(const DataOptions& o) {
  std::vector<std::string> files;
  for (const char* name : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                           "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"})
    for (const char* suffix : {".gz", ""}) {
      const std::filesystem::path file = std::filesystem::path(o.dir) / (std::string(name) + suffix);
      std::error_code ec;
      if (std::filesystem::exists(file, ec)) files.push_back(file.string());
    }
  return files;
}

namespace {

std::string number_text(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

// A validator of a finite double with `accepts(v)`; `expected` completes "expected ...".
CLI::Validator finite_check(std::function<bool(double)> accepts, const std::string& expected) {
  return CLI::Validator(
      [accepts, expected](std::string& text) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(text, v) || !std::isfinite(v) || !accepts(v))
          return "expected " + expected + ", got " + text;
        return "";
      },
      expected);
}

}  // namespace

CLI::Validator finite_positive() {
  return finite_check([](double v) { return v > 0; }, "a finite number > 0");
}

CLI::Validator finite_non_negative() {
  return finite_check([](double v) { return v >= 0; }, "a finite number >= 0");
}

CLI::Validator finite_at_least_below(double low, double high) {
  return finite_check([=](double v) { return v >= low && v < high; },
                      "a number in [" + number_text(low) + ", " + number_text(high) + ")");
}

CLI::Validator finite_between(double low, double high) {
  return finite_check([=](double v) { return v >= low && v <= high; },
                      "a number in [" + number_text(low) + ", " + number_text(high) + "]");
}

void add_threads_option(CLI::App& app, int& threads) {
  app.add_option("--threads", threads, "Threads for every kernel (0: one per core)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
}

int apply_threads(int threads) {
  // OMP_THREAD_LIMIT caps every team; OpenBLAS told of more threads than a team gets
  // would wait for the missing ones forever. The default takes what the limit allows,
  // an explicit count above it is refused.
  const int limit = omp_get_thread_limit();
  if (threads > limit)
    throw UsageError("--threads " + std::to_string(threads) + ": OMP_THREAD_LIMIT allows at most " +
                     std::to_string(limit) + " threads");
  const int wanted = threads == 0 ? std::min(omp_get_num_procs(), limit) : threads;
  const int got = nn::set_engine_threads(wanted);
  if (got != wanted)  // OpenBLAS caps the count at its build's maximum
    throw UsageError("--threads " + std::to_string(threads) + ": at most " + std::to_string(got) +
                     " threads (OpenBLAS's build limit)");
  return got;
}

data::TrainTest load_data(const DataOptions& o) {
  data::TrainTest d = data::load_mnist_style(o.dir);
  // Every model takes (N, 1, 28, 28): say so about the data, not about a layer's shapes
  // half-way through an epoch.
  for (const auto& [set, name] : {std::pair{&d.train, "train-images-idx3-ubyte"},
                                  std::pair{&d.test, "t10k-images-idx3-ubyte"}})
    if (set->channels != 1 || set->rows != 28 || set->cols != 28)
      throw data::DataError((std::filesystem::path(o.dir) / name).string() + ": images are " +
                            std::to_string(set->rows) + " x " + std::to_string(set->cols) +
                            "; every model takes 28 x 28 images (MNIST, Fashion-MNIST)");
  data::truncate(d.train, o.train_examples);
  data::truncate(d.test, o.test_examples);
  return d;
}

double default_lr(const std::string& model) {
  if (model == "lenet") return 0.9;
  // LeNet with any normalization (-bn, -ln, -gn, -in): the seed's 1.0 for lenet-bn.
  if (model.starts_with("lenet-")) return 1.0;
  if (model == "vgg" || model == "vgg-bn") return 0.05;
  return 0.1;
}

}  // namespace bnorm::cli
