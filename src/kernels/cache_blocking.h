// Channel blocking: when may a channels-first pass keep a channel's slice in cache?
//
// Forward training reads x twice (statistics, then normalize) and the backward reads x
// and dy twice (sums, then dx). Run channel by channel, each thread reducing a channel
// and normalizing it right after, the second read comes from the core's L2 instead of
// the shared cache or memory: 2T instead of 3T forward, 3T instead of 5T backward
// (../shared/design ARCHITECTURE.md, "Performance model"). That holds while the
// channel's slices (n * spatial values of each tensor read twice) fit in the budget.
#pragma once

#include <cstdint>

namespace bnorm::kernels {

// The most bytes of slices one channel may have to run fused: twice the core's L2, or
// 1 MiB when the L2 size cannot be read. The elementwise pass walks the slice backwards
// (the reduction's last lines are the ones still cached), so a slice larger than the L2
// still has its last part re-read from there: measured on this machine (2 MiB L2), the
// backward of (64,64,56,56), 1.6 MiB of slices per channel, went from 20 to 23 GB/s at
// 2 threads fused, and no shape up to 100 MB slices was slower fused (docs/benchmarks.md).
// BNORM_FUSED_CHANNELS, read once, chooses: "auto" (default, that budget), "never" (the
// separate passes; for A/B runs) or a byte count; anything else means "auto".
int64_t fused_slice_budget();

// For tests: override_fused_slice_budget(-1) restores the environment's policy, 0 turns
// the fused passes off, INT64_MAX allows any slice, other values set the budget.
void override_fused_slice_budget(int64_t bytes);

}  // namespace bnorm::kernels
