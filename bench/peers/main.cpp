// bench_peers: bnorm's batch norm beside ATen, oneDNN and a memory copy, all in
// one process run, in GB/s of the performance model's bytes (ARCHITECTURE.md):
// forward-train and inference move 2T, backward 3T (T = one tensor's bytes).
// The copy moves 2T, so its GB/s is the ceiling on the same scale.
//
//   bench_peers [--threads 1,2] [--shapes 64x64x56x56,256x120]
//               [--passes forward_train,inference,backward]
//               [--repeats 7] [--min-ms 20] [--json FILE]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "peer.hpp"

namespace bnorm_bench {

std::string Shape::str() const {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(dims[i]);
  }
  s += ')';
  return s;
}

const char *layout_name(Layout layout) {
  return layout == Layout::channels_first ? "channels_first" : "channels_last";
}

const char *pass_name(Pass pass) {
  switch (pass) {
    case Pass::forward_train: return "forward_train";
    case Pass::inference: return "inference";
    case Pass::backward: return "backward";
  }
  return "?";
}

void fill_pattern(float *data, int64_t count, uint32_t seed, float offset) {
  uint32_t state = seed * 2654435761u + 1u;
  for (int64_t i = 0; i < count; ++i) {
    state = state * 1664525u + 1013904223u;
    data[i] = static_cast<float>(state >> 8) * (2.0f / 16777216.0f) - 1.0f + offset;
  }
}

namespace {

constexpr double kNone = -1.0;  // a cell the peer could not measure

struct Options {
  std::vector<int> threads = {2};
  std::vector<Shape> shapes = {{{256, 6, 24, 24}},  {{256, 16, 8, 8}},   {{256, 120}},
                               {{64, 64, 56, 56}},  {{32, 256, 14, 14}}, {{8, 32, 112, 112}}};
  std::vector<Pass> passes = {Pass::forward_train, Pass::inference, Pass::backward};
  int repeats = 7;
  double min_seconds = 0.020;
  std::string json_path;
};

std::vector<std::string> split(const std::string &text, char separator) {
  std::vector<std::string> parts;
  std::stringstream stream(text);
  std::string part;
  while (std::getline(stream, part, separator))
    if (!part.empty()) parts.push_back(part);
  return parts;
}

[[noreturn]] void usage_error(const std::string &message) {
  std::cerr << "bench_peers: " << message
            << "\nusage: bench_peers [--threads 1,2] [--shapes NxCxHxW,NxC,...] "
               "[--passes forward_train,inference,backward] [--repeats R] [--min-ms MS] "
               "[--json FILE]\n";
  std::exit(2);
}

Options parse_options(int argc, char **argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") usage_error("help");
    if (i + 1 >= argc) usage_error("missing value after " + flag);
    const std::string value = argv[++i];
    try {
      if (flag == "--threads") {
        options.threads.clear();
        for (const auto &part : split(value, ',')) options.threads.push_back(std::stoi(part));
      } else if (flag == "--shapes") {
        options.shapes.clear();
        for (const auto &part : split(value, ',')) {
          Shape shape;
          for (const auto &dim : split(part, 'x')) shape.dims.push_back(std::stoll(dim));
          if (shape.dims.size() < 2) usage_error("a shape needs at least N and C: " + part);
          options.shapes.push_back(shape);
        }
      } else if (flag == "--passes") {
        options.passes.clear();
        for (const auto &part : split(value, ',')) {
          if (part == "forward_train") options.passes.push_back(Pass::forward_train);
          else if (part == "inference") options.passes.push_back(Pass::inference);
          else if (part == "backward") options.passes.push_back(Pass::backward);
          else usage_error("unknown pass " + part);
        }
      } else if (flag == "--repeats") {
        options.repeats = std::max(1, std::stoi(value));
      } else if (flag == "--min-ms") {
        options.min_seconds = std::stod(value) / 1000.0;
      } else if (flag == "--json") {
        options.json_path = value;
      } else {
        usage_error("unknown option " + flag);
      }
    } catch (const std::logic_error &) {
      usage_error("bad value for " + flag + ": " + value);
    }
  }
  return options;
}

double seconds_of(Peer &peer, Pass pass, int64_t iterations) {
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iterations; ++i) peer.run(pass);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Median seconds per call: one warm-up call, iterations per timing chosen so a
// timing lasts at least min_seconds, then the median over the repeats.
double median_seconds(Peer &peer, Pass pass, const Options &options) {
  peer.run(pass);
  const double once = std::max(seconds_of(peer, pass, 1), 1e-9);
  const auto iterations =
      std::max<int64_t>(1, static_cast<int64_t>(std::ceil(options.min_seconds / once)));
  std::vector<double> per_call;
  for (int r = 0; r < options.repeats; ++r)
    per_call.push_back(seconds_of(peer, pass, iterations) / static_cast<double>(iterations));
  std::sort(per_call.begin(), per_call.end());
  return per_call[per_call.size() / 2];
}

// GB/s of each pass of one peer for one case, kNone where it failed.
std::vector<double> measure(Peer &peer, const Shape &shape, Layout layout, int threads,
                            const Options &options) {
  std::vector<double> gbps(options.passes.size(), kNone);
  const double tensor_bytes = static_cast<double>(shape.numel()) * sizeof(float);
  try {
    peer.set_threads(threads);
    peer.setup(shape, layout);
  } catch (const std::exception &error) {
    std::cerr << "  " << peer.name() << " " << shape.str() << " " << layout_name(layout)
              << ": " << error.what() << "\n";
    return gbps;
  }
  for (size_t p = 0; p < options.passes.size(); ++p) {
    const Pass pass = options.passes[p];
    const double model_bytes = (pass == Pass::backward ? 3.0 : 2.0) * tensor_bytes;
    try {
      gbps[p] = model_bytes / median_seconds(peer, pass, options) / 1e9;
    } catch (const std::exception &error) {
      std::cerr << "  " << peer.name() << " " << shape.str() << " " << layout_name(layout)
                << " " << pass_name(pass) << ": " << error.what() << "\n";
    }
  }
  peer.teardown();
  return gbps;
}

struct Row {
  int threads;
  Shape shape;
  Layout layout;
  Pass pass;
  double bnorm, aten, onednn, onednn_plain, onednn_blocked, copy;
  std::string onednn_format;
};

std::string cell(double value) {
  if (value == kNone) return "-";
  char text[32];
  std::snprintf(text, sizeof text, "%.2f", value);
  return text;
}

std::string ratio(double numerator, double denominator) {
  if (numerator == kNone || denominator == kNone) return "-";
  char text[32];
  std::snprintf(text, sizeof text, "%.2fx", numerator / denominator);
  return text;
}

std::string json_number(double value) {
  if (value == kNone) return "null";
  char text[32];
  std::snprintf(text, sizeof text, "%.4g", value);
  return text;
}

void print_table(const std::vector<Row> &rows) {
  std::printf("%3s %-18s %-14s %-13s %8s %8s %8s %-8s %8s %8s %8s %8s\n", "thr", "shape",
              "layout", "pass", "bnorm", "aten", "onednn", "(format)", "copy", "b/aten",
              "b/onednn", "b/copy");
  for (const auto &row : rows)
    std::printf("%3d %-18s %-14s %-13s %8s %8s %8s %-8s %8s %8s %8s %8s\n", row.threads,
                row.shape.str().c_str(), layout_name(row.layout), pass_name(row.pass),
                cell(row.bnorm).c_str(), cell(row.aten).c_str(), cell(row.onednn).c_str(),
                row.onednn_format.c_str(), cell(row.copy).c_str(),
                ratio(row.bnorm, row.aten).c_str(), ratio(row.bnorm, row.onednn).c_str(),
                ratio(row.bnorm, row.copy).c_str());
  std::printf("GB/s = model bytes / median time; forward_train and inference 2T, backward 3T;"
              " copy moves 2T.\n");
}

void write_json(const std::vector<Row> &rows, const std::string &path) {
  std::ofstream out(path);
  if (!out) {
    std::cerr << "bench_peers: cannot write " << path << "\n";
    return;
  }
  out << "{\"unit\": \"GB/s\", \"model_bytes\": {\"forward_train\": \"2T\", \"inference\": "
         "\"2T\", \"backward\": \"3T\", \"copy\": \"2T\"},\n \"rows\": [\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto &row = rows[i];
    out << "  {\"threads\": " << row.threads << ", \"shape\": [";
    for (size_t d = 0; d < row.shape.dims.size(); ++d)
      out << (d ? ", " : "") << row.shape.dims[d];
    out << "], \"layout\": \"" << layout_name(row.layout) << "\", \"pass\": \""
        << pass_name(row.pass) << "\", \"bnorm\": " << json_number(row.bnorm)
        << ", \"aten\": " << json_number(row.aten) << ", \"onednn\": " << json_number(row.onednn)
        << ", \"onednn_format\": \"" << row.onednn_format
        << "\", \"onednn_plain\": " << json_number(row.onednn_plain)
        << ", \"onednn_nChw16c\": " << json_number(row.onednn_blocked)
        << ", \"copy\": " << json_number(row.copy) << "}" << (i + 1 < rows.size() ? "," : "")
        << "\n";
  }
  out << "]}\n";
}

}  // namespace
}  // namespace bnorm_bench

int main(int argc, char **argv) {
  using namespace bnorm_bench;
  const Options options = parse_options(argc, argv);
  auto bnorm = make_bnorm_peer();
  auto aten = make_aten_peer();
  auto onednn_plain = make_onednn_peer(false);
  auto onednn_blocked = make_onednn_peer(true);
  auto copy = make_copy_peer();

  Options copy_options = options;
  copy_options.passes = {Pass::inference};

  std::vector<Row> rows;
  for (const int threads : options.threads) {
    for (const auto &shape : options.shapes) {
      // The copy's bytes are the same for every layout and pass: 2T.
      const double copy_gbps =
          measure(*copy, shape, Layout::channels_first, threads, copy_options)[0];
      for (const Layout layout : {Layout::channels_first, Layout::channels_last}) {
        std::cerr << "threads " << threads << " " << shape.str() << " " << layout_name(layout)
                  << "\n";
        const auto b = measure(*bnorm, shape, layout, threads, options);
        const auto a = measure(*aten, shape, layout, threads, options);
        const auto plain = measure(*onednn_plain, shape, layout, threads, options);
        const auto blocked = layout == Layout::channels_first
                                 ? measure(*onednn_blocked, shape, layout, threads, options)
                                 : std::vector<double>(options.passes.size(), kNone);
        for (size_t p = 0; p < options.passes.size(); ++p) {
          const bool use_blocked = blocked[p] > plain[p];
          const char *plain_format = layout == Layout::channels_first ? "nchw" : "nhwc";
          rows.push_back({threads, shape, layout, options.passes[p], b[p], a[p],
                          use_blocked ? blocked[p] : plain[p], plain[p], blocked[p], copy_gbps,
                          use_blocked ? "nChw16c" : plain_format});
        }
      }
    }
  }
  print_table(rows);
  if (!options.json_path.empty()) write_json(rows, options.json_path);
  return 0;
}
