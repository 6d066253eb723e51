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

// GB/s of each pass of one peer for one problem; kNone where it failed, and
// everywhere for a peer that is not there or has no such operation.
std::vector<double> measure(Peer *peer, const Problem &problem, Layout layout, int threads,
                            const std::vector<Pass> &passes, const TableOptions &options) {
  std::vector<double> gbps(passes.size(), kNone);
  if (!peer || !peer->supports(problem.norm, layout)) return gbps;
  const Shape &shape = problem.shape;
  const double tensor_bytes = static_cast<double>(shape.numel()) * sizeof(float);
  const auto where = [&] {
    return "  " + peer->name() + " " + norm_name(problem.norm) + " " + shape.str() + " " +
           layout_name(layout);
  };
  try {
    peer->set_threads(threads);
    peer->setup(problem, layout);
  } catch (const std::exception &error) {
    std::cerr << where() << ": " << error.what() << "\n";
    return gbps;
  }
  for (size_t p = 0; p < passes.size(); ++p) {
    const Pass pass = passes[p];
    const double model_bytes = (pass == Pass::backward ? 3.0 : 2.0) * tensor_bytes;
    try {
      gbps[p] = model_bytes / median_seconds(*peer, pass, options) / 1e9;
    } catch (const std::exception &error) {
      std::cerr << where() << " " << pass_name(pass) << ": " << error.what() << "\n";
    }
  }
  peer->teardown();
  return gbps;
}

struct Row {
  int threads;
  Problem problem;
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

// The norm column: "group:G" for group norm, else the name.
std::string norm_label(const Problem &problem) {
  std::string label = norm_name(problem.norm);
  if (problem.norm == Norm::group) label += ":" + std::to_string(problem.groups);
  return label;
}

// A table of batch norm alone prints as it did before the family came (no norm column),
// so that scripts reading it keep working.
void print_table(const std::vector<Row> &rows) {
  const bool family = std::any_of(rows.begin(), rows.end(),
                                  [](const Row &row) { return row.problem.norm != Norm::batch; });
  if (family) std::printf("%-11s ", "norm");
  std::printf("%3s %-18s %-14s %-13s %8s %8s %8s %-8s %8s %8s %8s %8s\n", "thr", "shape",
              "layout", "pass", "bnorm", "aten", "onednn", "(format)", "copy", "b/aten",
              "b/onednn", "b/copy");
  for (const auto &row : rows) {
    if (family) std::printf("%-11s ", norm_label(row.problem).c_str());
    std::printf("%3d %-18s %-14s %-13s %8s %8s %8s %-8s %8s %8s %8s %8s\n", row.threads,
                row.problem.shape.str().c_str(), layout_name(row.layout), pass_name(row.pass),
                cell(row.bnorm).c_str(), cell(row.aten).c_str(), cell(row.onednn).c_str(),
                row.onednn_format ? row.onednn_format : "-", cell(row.copy).c_str(),
                ratio(row.bnorm, row.aten).c_str(), ratio(row.bnorm, row.onednn).c_str(),
                ratio(row.bnorm, row.copy).c_str());
  }
  std::printf("GB/s = model bytes / median time; forward_train and inference 2T, backward 3T;"
              " copy moves 2T.\n");
  std::fflush(stdout);
}

void write_json(const std::vector<Row> &rows, std::ostream &out) {
  out << "{\"unit\": \"GB/s\", \"model_bytes\": {\"forward_train\": \"2T\", \"inference\": "
         "\"2T\", \"backward\": \"3T\", \"copy\": \"2T\"},\n \"rows\": [\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto &row = rows[i];
    const Shape &shape = row.problem.shape;
    out << "  {\"norm\": \"" << norm_name(row.problem.norm) << "\", \"groups\": ";
    if (row.problem.groups > 0) {
      out << row.problem.groups;
    } else {
      out << "null";
    }
    out << ", \"threads\": " << row.threads << ", \"shape\": [";
    for (size_t d = 0; d < shape.dims.size(); ++d) out << (d ? ", " : "") << shape.dims[d];
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

const std::vector<NormSpec> &norm_specs() {
  // The shapes (issue 10, "Speed") for the family; batch norm's are the table's
  // from before the family came.
  static const std::vector<NormSpec> specs = {
      {Norm::batch, "batch", "--shapes", "NxC or NxCxHxW... (e.g. 64x64x56x56)",
       {{Norm::batch, {{256, 6, 24, 24}}},
        {Norm::batch, {{256, 16, 8, 8}}},
        {Norm::batch, {{256, 120}}},
        {Norm::batch, {{64, 64, 56, 56}}},
        {Norm::batch, {{32, 256, 14, 14}}},
        {Norm::batch, {{8, 32, 112, 112}}}}},
      {Norm::layer, "layer", "--layer-shapes",
       "ROWSxCOLS, normalized over the last size (e.g. 8192x768)",
       {{Norm::layer, {{8192, 768}}}, {Norm::layer, {{4096, 1024}}}}},
      {Norm::group, "group", "--group-shapes",
       "NxCxHxW...:G, G groups dividing C (e.g. 32x256x14x14:32)",
       {{Norm::group, {{32, 256, 14, 14}}, 32}, {Norm::group, {{8, 64, 56, 56}}, 32}}},
      {Norm::instance, "instance", "--instance-shapes",
       "NxCxHxW..., more than one spatial value (e.g. 16x64x56x56)",
       {{Norm::instance, {{16, 64, 56, 56}}, 64}}},
      {Norm::rms, "rms", "--rms-shapes",
       "ROWSxCOLS, normalized over the last size (e.g. 8192x768)",
       {{Norm::rms, {{8192, 768}}}, {Norm::rms, {{4096, 1024}}}}},
  };
  return specs;
}

const NormSpec &norm_spec(Norm norm) { return norm_specs()[static_cast<size_t>(norm)]; }

std::array<std::vector<Problem>, kNormCount> TableOptions::default_problems() {
  std::array<std::vector<Problem>, kNormCount> problems;
  for (const auto &spec : norm_specs()) problems[static_cast<size_t>(spec.norm)] = spec.defaults;
  return problems;
}

std::vector<Norm> parse_norms(const std::string &text) {
  std::vector<std::pair<const char *, Norm>> names;
  for (const auto &spec : norm_specs()) names.emplace_back(spec.name, spec.norm);
  std::vector<Norm> norms;
  for (const Norm norm : parse_names<Norm>(text, "norm", names))
    if (std::find(norms.begin(), norms.end(), norm) == norms.end()) norms.push_back(norm);
  return norms;
}

std::vector<Problem> parse_problems(Norm norm, const std::string &text) {
  std::vector<Problem> problems;
  for (const auto &part : split(text, ',')) {
    const NormSpec &spec = norm_spec(norm);
    const auto bad = [&](const std::string &why) {
      return std::invalid_argument("'" + part + "': " + why + " (" + spec.name +
                                   " norm shapes are " + spec.shape_syntax + ")");
    };
    const size_t colon = part.find(':');
    if ((norm == Norm::group) != (colon != std::string::npos))
      throw bad(norm == Norm::group ? "no ':G' after the shape" : "only group norm takes ':G'");
    Problem problem{norm, parse_shapes(part.substr(0, colon)).front(), 0};
    const Shape &shape = problem.shape;
    switch (norm) {
      case Norm::batch:
      case Norm::layer:
      case Norm::rms: break;
      case Norm::group:
        if (!parse_integer(part.substr(colon + 1), 1, shape.c(), problem.groups) ||
            shape.c() % problem.groups != 0)
          throw bad("G must be a whole number of groups dividing C = " +
                    std::to_string(shape.c()));
        break;
      case Norm::instance:
        if (shape.dims.size() < 3 || shape.spatial() < 2)
          throw bad("instance norm in training needs more than one spatial value");
        problem.groups = shape.c();
        break;
    }
    problems.push_back(problem);
  }
  if (problems.empty()) throw std::invalid_argument("no shape given");
  return problems;
}

std::string problems_text(const std::vector<Problem> &problems) {
  std::string text;
  for (const auto &problem : problems) {
    if (!text.empty()) text += ',';
    for (size_t d = 0; d < problem.shape.dims.size(); ++d)
      text += (d ? "x" : "") + std::to_string(problem.shape.dims[d]);
    if (problem.norm == Norm::group) text += ":" + std::to_string(problem.groups);
  }
  return text;
}

std::vector<Norm> implied_norms(const std::vector<Norm> &shapes_given) {
  std::vector<Norm> norms;
  for (const auto &spec : norm_specs())
    if (shapes_given.empty() || std::find(shapes_given.begin(), shapes_given.end(),
                                          spec.norm) != shapes_given.end())
      norms.push_back(spec.norm);
  return norms;
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
    for (const Norm norm : options.norms) {
      // Only batch norm has an inference pass here (the family's inference is its
      // forward without saving statistics, or batch norm's map for instance norm).
      std::vector<Pass> passes;
      for (const Pass pass : options.passes)
        if (norm == Norm::batch || pass != Pass::inference) passes.push_back(pass);
      if (passes.empty()) continue;
      for (const auto &problem : options.problems[static_cast<size_t>(norm)]) {
        // The copy's bytes are the same for every layout and pass: 2T.
        const double copy_gbps = measure(copy.get(), problem, Layout::channels_first, threads,
                                         {Pass::inference}, options)[0];
        const std::vector<Layout> layouts =
            problem.row_wise() ? std::vector<Layout>{Layout::rows} : options.layouts;
        for (const Layout layout : layouts) {
          if (options.progress)
            std::cerr << "threads " << threads << " " << norm_label(problem) << " "
                      << problem.shape.str() << " " << layout_name(layout) << "\n";
          const auto b = measure(bnorm.get(), problem, layout, threads, passes, options);
          const auto a = measure(plugin.aten.get(), problem, layout, threads, passes, options);
          const auto plain =
              measure(plugin.onednn_plain.get(), problem, layout, threads, passes, options);
          const auto blocked =
              measure(plugin.onednn_blocked.get(), problem, layout, threads, passes, options);
          const char *plain_format = layout == Layout::channels_first ? "nchw"
                                     : layout == Layout::channels_last ? "nhwc"
                                                                       : "ab";
          for (size_t p = 0; p < passes.size(); ++p) {
            const bool use_blocked = blocked[p] > plain[p];
            const double onednn = use_blocked ? blocked[p] : plain[p];
            rows.push_back({threads, problem, layout, passes[p], b[p], a[p], onednn, plain[p],
                            blocked[p], copy_gbps,
                            onednn == kNone ? nullptr : use_blocked ? "nChw16c" : plain_format});
          }
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
