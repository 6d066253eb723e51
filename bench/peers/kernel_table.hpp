// The kernel table: bnorm's batch norm beside ATen, oneDNN and a memory copy, all in
// one process run, in GB/s of the performance model's bytes (ARCHITECTURE.md):
// forward-train and inference move 2T, backward 3T (T = one tensor's bytes). The
// copy moves 2T, so its GB/s is the ceiling on the same scale. Two front doors print
// it: bench_peers and `bnorm bench kernels`.
#pragma once

#include <string>
#include <vector>

#include "peer.hpp"

namespace bnorm_bench {

struct TableOptions {
  std::vector<int> threads = {1, 2};
  std::vector<Shape> shapes = {{{256, 6, 24, 24}},  {{256, 16, 8, 8}},   {{256, 120}},
                               {{64, 64, 56, 56}},  {{32, 256, 14, 14}}, {{8, 32, 112, 112}}};
  std::vector<Layout> layouts = {Layout::channels_first, Layout::channels_last};
  std::vector<Pass> passes = {Pass::forward_train, Pass::inference, Pass::backward};
  int repeats = 7;
  double min_seconds = 0.020;
  std::string json_path;  // empty: no JSON
  bool progress = true;   // one line per case on stderr
  std::string program;    // starts the notes on stderr ("bnorm", "bench_peers")
};

// The list options as written on a command line ("1,2", "64x64x56x56,256x120",
// "channels_first,channels_last", "forward_train,backward"). Each throws
// std::invalid_argument with a message that names the bad item.
std::vector<int> parse_threads(const std::string &text);
std::vector<Shape> parse_shapes(const std::string &text);
std::vector<Layout> parse_layouts(const std::string &text);
std::vector<Pass> parse_passes(const std::string &text);

// Measures every case, prints the table on stdout and writes the JSON file when
// asked. Without the peers plugin the ATen and oneDNN cells are "-" and one note on
// stderr says why. Throws std::runtime_error when the JSON file cannot be written
// (checked before anything is measured).
void run_kernel_table(const TableOptions &options);

}  // namespace bnorm_bench
