#include "kernel_table.hpp"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <iostream>
#include <memory>
#include <sstream>
#include <stdexcept>

#include "io/atomic_file.h"
#include "io/output_paths.h"
#include "plugin_client.hpp"

namespace bnorm_bench {
namespace {

constexpr double kNone = -1.0;  // a cell the peer could not measure

std::vector<std::string> split(const std::string &text, char separator) {
  std::vector<std::string> parts;
  std::stringstream stream(text);
  std::string part;
  while (std::getline(stream, part, separator))
    if (!part.empty()) parts.push_back(part);
  return parts;
}

// True when the whole of text is an integer in [low, high], stored in value.
bool parse_integer(const std::string &text, int64_t low, int64_t high, int64_t &value) {
  const char *end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, value);
  return error == std::errc() && stop == end && value >= low && value <= high;
}

template <typename T>
std::vector<T> parse_names(const std::string &text, const char *what,
                           const std::vector<std::pair<const char *, T>> &names) {
  std::vector<T> values;
  for (const auto &part : split(text, ',')) {
    const auto known = std::find_if(names.begin(), names.end(),
                                    [&](const auto &name) { return part == name.first; });
    if (known == names.end()) {
      std::string expected;
      for (const auto &name : names) {
        if (!expected.empty()) expected += ", ";
        expected += name.first;
      }
      throw std::invalid_argument("unknown " + std::string(what) + " '" + part + "' (expected " +
                                  expected + ")");
    }
    values.push_back(known->second);
  }
  if (values.empty()) throw std::invalid_argument(std::string("no ") + what + " given");
  return values;
}

double seconds_of(Peer &peer, Pass pass, int64_t iterations) {
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iterations; ++i) peer.run(pass);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Median seconds per call: one warm-up call, iterations per timing chosen so a
// timing lasts at least min_seconds, then the median over the repeats.
double median_seconds(Peer &peer, Pass pass, const TableOptions &options) {
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

// GB/s of each pass of one peer for one case; kNone where it failed, and everywhere
// for a peer that is not there.
std::vector<double> measure(Peer *peer, const Shape &shape, Layout layout, int threads,
                            const std::vector<Pass> &passes, const TableOptions &options) {
  std::vector<double> gbps(passes.size(), kNone);
  if (!peer) return gbps;
  const double tensor_bytes = static_cast<double>(shape.numel()) * sizeof(float);
  try {
    peer->set_threads(threads);
    peer->setup(shape, layout);
  } catch (const std::exception &error) {
    std::cerr << "  " << peer->name() << " " << shape.str() << " " << layout_name(layout)
              << ": " << error.what() << "\n";
    return gbps;
  }
  for (size_t p = 0; p < passes.size(); ++p) {
    const Pass pass = passes[p];
    const double model_bytes = (pass == Pass::backward ? 3.0 : 2.0) * tensor_bytes;
    try {
      gbps[p] = model_bytes / median_seconds(*peer, pass, options) / 1e9;
    } catch (const std::exception &error) {
      std::cerr << "  " << peer->name() << " " << shape.str() << " " << layout_name(layout)
                << " " << pass_name(pass) << ": " << error.what() << "\n";
    }
  }
  peer->teardown();
  return gbps;
}

struct Row {
  int threads;
  Shape shape;
  Layout layout;
  Pass pass;
  double bnorm, aten, onednn, onednn_plain, onednn_blocked, copy;
  const char *onednn_format;  // nullptr: no oneDNN cell
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
                row.onednn_format ? row.onednn_format : "-", cell(row.copy).c_str(),
                ratio(row.bnorm, row.aten).c_str(), ratio(row.bnorm, row.onednn).c_str(),
                ratio(row.bnorm, row.copy).c_str());
  std::printf("GB/s = model bytes / median time; forward_train and inference 2T, backward 3T;"
              " copy moves 2T.\n");
  std::fflush(stdout);
}

void write_json(const std::vector<Row> &rows, std::ostream &out) {
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
        << ", \"onednn_format\": " << (row.onednn_format ? "\"" : "")
        << (row.onednn_format ? row.onednn_format : "null") << (row.onednn_format ? "\"" : "")
        << ", \"onednn_plain\": " << json_number(row.onednn_plain)
        << ", \"onednn_nChw16c\": " << json_number(row.onednn_blocked)
        << ", \"copy\": " << json_number(row.copy) << "}" << (i + 1 < rows.size() ? "," : "")
        << "\n";
  }
  out << "]}\n";
}

}  // namespace

std::vector<int> parse_threads(const std::string &text) {
  std::vector<int> threads;
  for (const auto &part : split(text, ',')) {
    int64_t value = 0;
    if (!parse_integer(part, 1, 1024, value))
      throw std::invalid_argument("'" + part + "' is not a thread count in [1, 1024]");
    threads.push_back(static_cast<int>(value));
  }
  if (threads.empty()) throw std::invalid_argument("no thread count given");
  return threads;
}

std::vector<Shape> parse_shapes(const std::string &text) {
  // A tensor of more than 2^34 floats (64 GiB) is a typo here, and keeps numel() in range.
  constexpr int64_t kMaxElements = int64_t{1} << 34;
  std::vector<Shape> shapes;
  for (const auto &part : split(text, ',')) {
    const bool well_formed =
        part.find_first_not_of("0123456789x") == std::string::npos && part.front() != 'x' &&
        part.back() != 'x' && part.find("xx") == std::string::npos &&
        part.find('x') != std::string::npos;
    if (!well_formed)
      throw std::invalid_argument("'" + part +
                                  "' is not a shape NxC or NxCxHxW... (e.g. 64x64x56x56)");
    Shape shape;
    int64_t elements = 1;
    for (const auto &dim : split(part, 'x')) {
      int64_t size = 0;
      if (!parse_integer(dim, 1, kMaxElements, size))
        throw std::invalid_argument("'" + part + "': every size must be at least 1");
      if ((elements *= size) > kMaxElements)
        throw std::invalid_argument("'" + part + "' has more than 2^34 elements");
      shape.dims.push_back(size);
    }
    shapes.push_back(shape);
  }
  if (shapes.empty()) throw std::invalid_argument("no shape given");
  return shapes;
}

std::vector<Layout> parse_layouts(const std::string &text) {
  return parse_names<Layout>(text, "layout",
                             {{"channels_first", Layout::channels_first},
                              {"channels_last", Layout::channels_last}});
}

std::vector<Pass> parse_passes(const std::string &text) {
  return parse_names<Pass>(text, "pass",
                           {{"forward_train", Pass::forward_train},
                            {"inference", Pass::inference},
                            {"backward", Pass::backward}});
}

void run_kernel_table(const TableOptions &options) {
  // The JSON path is checked before measuring (it may be a new file, or a table this
  // wrote before; src/io/output_paths.h) and written whole at the end.
  if (!options.json_path.empty())
    bnorm::io::check_output({"--json", options.json_path}, bnorm::io::OutputKind::bench_json,
                            false);
  auto bnorm = make_bnorm_peer();
  auto copy = make_copy_peer();
  PluginPeers plugin;
  try {
    plugin = load_plugin_peers();
  } catch (const PluginUnavailable &why) {
    std::cerr << options.program << ": note: no aten and onednn columns: " << why.what()
              << ". Install libtorch-dev and libdnnl-dev and rebuild to get them, or point "
                 "BNORM_PEERS_PLUGIN at a built libbnorm_bench_peers.so.\n";
  }

  std::vector<Row> rows;
  for (const int threads : options.threads) {
    for (const auto &shape : options.shapes) {
      // The copy's bytes are the same for every layout and pass: 2T.
      const double copy_gbps = measure(copy.get(), shape, Layout::channels_first, threads,
                                       {Pass::inference}, options)[0];
      for (const Layout layout : options.layouts) {
        if (options.progress)
          std::cerr << "threads " << threads << " " << shape.str() << " "
                    << layout_name(layout) << "\n";
        const auto &passes = options.passes;
        const auto b = measure(bnorm.get(), shape, layout, threads, passes, options);
        const auto a = measure(plugin.aten.get(), shape, layout, threads, passes, options);
        const auto plain =
            measure(plugin.onednn_plain.get(), shape, layout, threads, passes, options);
        const auto blocked =
            layout == Layout::channels_first
                ? measure(plugin.onednn_blocked.get(), shape, layout, threads, passes, options)
                : std::vector<double>(passes.size(), kNone);
        for (size_t p = 0; p < passes.size(); ++p) {
          const bool use_blocked = blocked[p] > plain[p];
          const char *plain_format = layout == Layout::channels_first ? "nchw" : "nhwc";
          const double onednn = use_blocked ? blocked[p] : plain[p];
          rows.push_back({threads, shape, layout, passes[p], b[p], a[p], onednn, plain[p],
                          blocked[p], copy_gbps,
                          onednn == kNone ? nullptr : use_blocked ? "nChw16c" : plain_format});
        }
      }
    }
  }
  print_table(rows);
  if (!options.json_path.empty()) {
    std::ostringstream json;
    write_json(rows, json);
    bnorm::io::write_file_atomically(options.json_path, json.str());
  }
}

}  // namespace bnorm_bench
