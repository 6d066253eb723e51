// The bit mask of a fused BN+ReLU (oneDNN's fuse_norm_relu workspace, one bit per value).
//
// Layout: value i of the tensor (its index in memory order, whatever the layout) is bit
// i % 8 of byte i / 8, least significant bit first; ceil(count / 8) bytes; the unused
// high bits of the last byte are 0. Bit i is 1 when the ReLU passed value i's gradient:
//   bit = !(y <= 0)   (y > 0, or NaN: torch's threshold_backward passes NaN's gradient)
#pragma once

#include <cstdint>

#include "kernels/simd.h"

namespace bnorm::kernels {

// Fused ReLU on the forward's output (oneDNN's fuse_norm_relu):
//   y = z < 0 ? 0 : z   (z the affine map's value; NaN passes, as torch.relu)
// and, when mask is not null, its bit mask.
struct ReluOutput {
  bool fused = false;
  uint8_t* mask = nullptr;
};

// The ReLU's gate on a gradient (the backward of a fused BN+ReLU): gradient value i is
// kept when !(y[i] <= 0), else 0, with y the fused forward's output, or when bit i of
// its mask is set. Both null: no gate.
template <class T>
struct ReluGate {
  const T* y = nullptr;
  const uint8_t* mask = nullptr;
};

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

// The gate of values [index, index + len) (len <= kSubPiece): the forward's output, or
// its mask expanded into tmp, or nullptr for none.
template <class T>
BNORM_INLINE const T* gate_run(const ReluGate<T>& gate, int64_t index, int64_t len, T* tmp) {
  if (gate.y) return gate.y + index;
  if (!gate.mask) return nullptr;
  expand_relu_mask(gate.mask, index, len, tmp);
  return tmp;
}

}  // namespace bnorm::kernels
