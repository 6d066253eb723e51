// The bit mask of a fused BN+ReLU (oneDNN's fuse_norm_relu workspace, one bit per value).
//
// Layout: value i of the tensor (its index in memory order, whatever the layout) is bit
// i % 8 of byte i / 8, least significant bit first; ceil(count / 8) bytes; the unused
// high bits of the last byte are 0. Bit i is 1 when the ReLU passed value i's gradient:
//   bit = !(y <= 0)   (y > 0, or NaN: torch's threshold_backward passes NaN's gradient)
#pragma once

#include <cstdint>

namespace bnorm::kernels {

// ceil(count / 8), without the overflow of (count + 7) / 8 near INT64_MAX.
inline int64_t relu_mask_bytes(int64_t count) { return count / 8 + (count % 8 != 0); }

// Writes bits [index, index + len) of mask from y[0 .. len) (y holds values
// index .. index + len - 1). Safe when other threads write the neighbouring bits of the
// first and last byte at the same time (those bytes are updated atomically); the run
// ending at `count` also clears the last byte's unused bits.
template <class T>
void pack_relu_mask(const T* y, int64_t index, int64_t len, int64_t count, uint8_t* mask);

// out[j] = bit (index + j) of mask as 1 or 0, for j in [0, len): the gate the fused
// backward reads (a value is kept when !(out[j] <= 0), the same test as on y).
template <class T>
void expand_relu_mask(const uint8_t* mask, int64_t index, int64_t len, T* out);

}  // namespace bnorm::kernels
