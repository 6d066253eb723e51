// bench_peers: the kernel table (kernel_table.hpp) without the bnorm command, for
// working on the kernels. `bnorm bench kernels` prints the same table.
//
//   bench_peers [--threads 1,2] [--norms batch,layer,group,instance,rms]
//               [--shapes 64x64x56x56,256x120] [--layer-shapes 8192x768]
//               [--group-shapes 32x256x14x14:32] [--instance-shapes 16x64x56x56]
//               [--rms-shapes 8192x768] [--layouts channels_first,channels_last]
//               [--passes forward_train,inference,backward]
//               [--repeats 7] [--min-ms 20] [--json FILE]
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <stdexcept>
#include <string>

#include "io/output_paths.h"
#include "kernel_table.hpp"

namespace {

[[noreturn]] void usage_error(const std::string &message) {
  std::cerr << "bench_peers: " << message
            << "\nusage: bench_peers [--threads 1,2] [--norms batch,layer,group,instance,rms] "
               "[--shapes NxCxHxW,NxC,...] [--layer-shapes ROWSxCOLS,...] "
               "[--group-shapes NxCxHxW:G,...] [--instance-shapes NxCxHxW,...] "
               "[--rms-shapes ROWSxCOLS,...] "
               "[--layouts channels_first,channels_last] "
               "[--passes forward_train,inference,backward] [--repeats R] [--min-ms MS] "
               "[--json FILE]\n";
  std::exit(2);
}

bnorm_bench::TableOptions parse_options(int argc, char **argv) {
  using namespace bnorm_bench;
  TableOptions options;
  options.program = "bench_peers";
  bool norms_given = false;
  std::vector<Norm> shapes_given;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") usage_error("help");
    if (i + 1 >= argc) usage_error("missing value after " + flag);
    const std::string value = argv[++i];
    try {
      const auto spec = std::find_if(norm_specs().begin(), norm_specs().end(),
                                     [&](const NormSpec &s) { return flag == s.shapes_option; });
      if (spec != norm_specs().end()) {
        options.problems[static_cast<size_t>(spec->norm)] = parse_problems(spec->norm, value);
        shapes_given.push_back(spec->norm);
      } else if (flag == "--threads") {
        options.threads = parse_threads(value);
      } else if (flag == "--norms") {
        options.norms = parse_norms(value);
        norms_given = true;
      } else if (flag == "--layouts") {
        options.layouts = parse_layouts(value);
      } else if (flag == "--passes") {
        options.passes = parse_passes(value);
      } else if (flag == "--repeats") {
        options.repeats = std::max(1, std::stoi(value));
      } else if (flag == "--min-ms") {
        const double ms = std::stod(value);
        if (!std::isfinite(ms) || ms < 0 || ms > 60000)
          usage_error("--min-ms: expected a number in [0, 60000], got " + value);
        options.min_seconds = ms / 1000.0;
      } else if (flag == "--json") {
        options.json_path = value;
      } else {
        usage_error("unknown option " + flag);
      }
    } catch (const std::logic_error &error) {
      usage_error("bad value for " + flag + ": " + value + ": " + error.what());
    }
  }
  if (!norms_given) options.norms = implied_norms(shapes_given);
  return options;
}

}  // namespace

int main(int argc, char **argv) {
  const bnorm_bench::TableOptions options = parse_options(argc, argv);
  try {
    bnorm_bench::run_kernel_table(options);
  } catch (const bnorm::io::PathError &error) {  // a --json path the rules refuse
    std::cerr << "bench_peers: " << error.what() << "\n";
    return 2;
  } catch (const std::exception &error) {
    std::cerr << "bench_peers: " << error.what() << "\n";
    return 1;
  }
  return 0;
}
