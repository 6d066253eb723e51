// What every peer shares: names and the input pattern. Compiled into the runner and
// into the plugin alike, so the plugin needs nothing of the runner's C++ symbols.
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
  switch (layout) {
    case Layout::channels_first: return "channels_first";
    case Layout::channels_last: return "channels_last";
    case Layout::rows: return "rows";
  }
  return "?";
}

const char *norm_name(Norm norm) {
  switch (norm) {
    case Norm::batch: return "batch";
    case Norm::layer: return "layer";
    case Norm::group: return "group";
    case Norm::instance: return "instance";
    case Norm::rms: return "rms";
  }
  return "?";
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

}  // namespace bnorm_bench
