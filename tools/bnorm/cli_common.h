// Pieces shared by the bnorm subcommands: options every command takes, data
// loading, thread set-up, and the one error type the commands throw for a bad
// combination of arguments.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "data/dataset.h"

namespace bnorm::cli {

// A usage problem found after parsing (e.g. --resume with a different --model).
// main() prints it as one line and exits with status 2, like a parse error.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct DataOptions {
  std::string dir = data::kDefaultFashionMnistDir;
  int64_t train_examples = 0;  // 0: all
  int64_t test_examples = 0;
};

void add_data_options(CLI::App& app, DataOptions& options, bool train_set);
void add_threads_option(CLI::App& app, int& threads);

// Sets OpenMP, OpenBLAS and the batch norm library to `threads` (0: every core);
// returns the count in effect.
int apply_threads(int threads);

data::TrainTest load_data(const DataOptions& options);

// Registers the subcommands; each sets its callback.
void add_train_command(CLI::App& app);
void add_evaluate_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_models_command(CLI::App& app);

// The default learning rate for a model (the seed's 0.9 for lenet, 1.0 for lenet-bn).
double default_lr(const std::string& model);

}  // namespace bnorm::cli
