// Pieces shared by the bnorm subcommands: options every command takes, data
// loading, thread set-up, and the one error type the commands throw for a bad
// combination of arguments.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

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
// The data files --data may read (each of the four names, gzipped and plain, that
// exists): inputs that no output may overwrite.
std::vector<std::string> data_files(const DataOptions& options);

// Checks for floating-point options. CLI11's own Range and PositiveNumber let NaN
// through (every comparison with NaN is false) and print DBL_MAX in full; these refuse
// NaN and infinities and say what is expected in a few words.
CLI::Validator finite_positive();
CLI::Validator finite_non_negative();
// low <= v < high
CLI::Validator finite_at_least_below(double low, double high);
// low <= v <= high
CLI::Validator finite_between(double low, double high);
void add_threads_option(CLI::App& app, int& threads);

// Sets OpenMP, OpenBLAS and the batch norm library to `threads` (0: every core);
// returns the count in effect. A count the runtime cannot give (above OMP_THREAD_LIMIT
// or OpenBLAS's build limit) is a UsageError, not a silent cap or a hang; the default
// takes at most OMP_THREAD_LIMIT.
int apply_threads(int threads);

// Loads --data and checks that both sets hold the 1 x 28 x 28 images every model takes
// (data::DataError naming the file otherwise), before any training starts.
data::TrainTest load_data(const DataOptions& options);

// Registers the subcommands; each sets its callback.
void add_train_command(CLI::App& app);
void add_evaluate_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_models_command(CLI::App& app);
void add_export_command(CLI::App& app);
void add_quantize_command(CLI::App& app);

// The default learning rate for a model (the seed's 0.9 for lenet, 1.0 for lenet-bn).
double default_lr(const std::string& model);

}  // namespace bnorm::cli
