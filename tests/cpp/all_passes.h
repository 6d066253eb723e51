// Every pass of the C API once on one problem, outputs kept: for tests that change how
// the kernels run (streaming stores, fused channels) and must not change a bit.
#pragma once

#include <cstdint>
#include <vector>

#include "test_support.h"

namespace bnorm::test {

template <class T>
struct AllPassOutputs {
  std::vector<T> y, y_inplace, mean, invstd, running_mean, running_var;
  std::vector<T> dx, dx_inplace, dweight, dbias;
  std::vector<T> dx_relu_mask, dx_relu_y, dweight_relu;
  std::vector<T> y_inference, dx_fixed;
  std::vector<uint8_t> mask;
  bool operator==(const AllPassOutputs&) const = default;
};

// Forward training (fused ReLU with mask, then plain in place), backward (out of place,
// in place, fused ReLU gated by the mask and by y), inference, backward with fixed
// statistics. Every output is written `offset` values past an allocation's start (so
// its cache-line alignment varies).
template <class T>
AllPassOutputs<T> run_all_passes(const Shape& s, int64_t offset);

}  // namespace bnorm::test
