#include "cli_common.h"

#include <omp.h>

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

void add_threads_option(CLI::App& app, int& threads) {
  app.add_option("--threads", threads, "Threads for every kernel (0: one per core)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
}

int apply_threads(int threads) {
  return nn::set_engine_threads(threads == 0 ? omp_get_num_procs() : threads);
}

data::TrainTest load_data(const DataOptions& o) {
  data::TrainTest d = data::load_mnist_style(o.dir);
  data::truncate(d.train, o.train_examples);
  data::truncate(d.test, o.test_examples);
  return d;
}

double default_lr(const std::string& model) {
  if (model == "lenet") return 0.9;
  if (model == "lenet-bn") return 1.0;
  if (model == "vgg" || model == "vgg-bn") return 0.05;
  return 0.1;
}

}  // namespace bnorm::cli
