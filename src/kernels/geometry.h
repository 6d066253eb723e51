// The flat view every kernel works on: c channels of n * spatial values each.
// A front-end maps its problem to it: batch norm's (N, C, *) directly; a layer norm's
// rows, or a group norm's (sample, group) slices, as channels of one sample (n = 1).
#pragma once

#include <cstdint>

namespace bnorm::kernels {

//   channels_last = false: x[(i * c + ch) * spatial + s]  (N, C, spatial)
//   channels_last = true:  x[(i * spatial + s) * c + ch]  (N, spatial, C)
struct Geometry {
  int64_t n = 0;
  int64_t c = 0;
  int64_t spatial = 0;
  bool channels_last = false;

  int64_t per_channel() const { return n * spatial; }  // m
  int64_t values() const { return n * c * spatial; }
};

// Does the layout have rows of channels (a channel's values strided by c)? (N, C) input
// (spatial == 1) is the same memory in both layouts and runs as rows of channels;
// otherwise channels-first data has per-channel rows of `spatial` contiguous values.
inline bool rows_of_channels(const Geometry& g) { return g.channels_last || g.spatial == 1; }

}  // namespace bnorm::kernels
