// The kernel table: bnorm's normalizations beside ATen, oneDNN and a memory copy, all in
// one process run, in GB/s of the performance model's bytes (ARCHITECTURE.md):
// forward-train and inference move 2T, backward 3T (T = one tensor's bytes). The
// copy moves 2T, so its GB/s is the ceiling on the same scale. Two front doors print
// it: bench_peers and `bnorm bench kernels`.
//
// Rows: threads x normalization x shape x layout x pass. A normalization is one entry of
// norm_specs(): its name for --norms, the option that lists its shapes, the syntax of a
// shape there and its default shapes; everything else (the peers' supports(), the
// table, the JSON) goes by Norm. Layer and RMS norm have one layout (rows); batch norm
// alone has an inference pass in the table.
#pragma once

#include <array>
#include <string>
#include <vector>

#include "peer.hpp"

namespace bnorm_bench {

struct NormSpec {
  Norm norm;
  const char *name;           // in --norms, the JSON's "norm" and the table
  const char *shapes_option;  // the command-line option listing its shapes
  const char *shape_syntax;   // how one shape is written there, for help and errors
  std::vector<Problem> defaults;
};

// One per Norm, in Norm order.
const std::vector<NormSpec> &norm_specs();
const NormSpec &norm_spec(Norm norm);

struct TableOptions {
  std::vector<int> threads = {1, 2};
  std::vector<Norm> norms = {Norm::batch, Norm::layer, Norm::group, Norm::instance, Norm::rms};
  // Per Norm (indexed by it): the problems measured when the norm is in norms.
  std::array<std::vector<Problem>, kNormCount> problems = default_problems();
  std::vector<Layout> layouts = {Layout::channels_first, Layout::channels_last};
  std::vector<Pass> passes = {Pass::forward_train, Pass::inference, Pass::backward};
  int repeats = 7;
  double min_seconds = 0.020;
  std::string json_path;  // empty: no JSON
  bool progress = true;   // one line per case on stderr
  std::string program;    // starts the notes on stderr ("bnorm", "bench_peers")

  static std::array<std::vector<Problem>, kNormCount> default_problems();
};

// The list options as written on a command line ("1,2", "64x64x56x56,256x120",
// "channels_first,channels_last", "forward_train,backward"). Each throws
// std::invalid_argument with a message that names the bad item.
std::vector<int> parse_threads(const std::string &text);
std::vector<Shape> parse_shapes(const std::string &text);
std::vector<Layout> parse_layouts(const std::string &text);
std::vector<Pass> parse_passes(const std::string &text);
std::vector<Norm> parse_norms(const std::string &text);  // "batch,layer,group,instance,rms"
// One norm's shape list in its syntax (norm_spec(norm).shape_syntax): batch
// "64x64x56x56,256x120", layer and rms "8192x768", group "32x256x14x14:32", instance
// "16x64x56x56"; and back (the default of each option).
std::vector<Problem> parse_problems(Norm norm, const std::string &text);
std::string problems_text(const std::vector<Problem> &problems);

// The norms measured when --norms is not given, in norm_specs() order: those whose shape
// options were given, or every norm when none was (so `--shapes 8x3x5x5` alone is the
// batch norm table).
std::vector<Norm> implied_norms(const std::vector<Norm> &shapes_given);

// Measures every case, prints the table on stdout and writes the JSON file when
// asked. Without the peers plugin the ATen and oneDNN cells are "-" and one note on
// stderr says why. Throws std::runtime_error when the JSON file cannot be written
// (checked before anything is measured).
void run_kernel_table(const TableOptions &options);

}  // namespace bnorm_bench
