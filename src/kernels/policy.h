// Every size threshold and environment variable the kernels follow, in one place.
//
// Two kinds. Work-split sizes decide how a reduction is cut into chunks and lanes, so
// the bits of every result depend on them (never on the thread count): changing one
// changes the outputs (bench/kernel_fingerprint_all tells). Speed policies only choose
// between paths that give the same bits (threads or not, fused or separate passes,
// streaming stores or not); the environment variables below steer those, each read once.
#pragma once

#include <cstdint>

namespace bnorm::kernels {

// ---- work-split sizes (the bits depend on these) ------------------------------------
constexpr int64_t kChunk = 8192;        // values per reduction chunk
constexpr int64_t kColumnBlock = 256;   // channels per rows-of-channels work item
// Rows-of-channels partials: at most 256 per channel, and at least 32 rows per chunk, so
// the scratch (<= 24 bytes per channel per chunk) stays under 0.75 bytes per input value.
constexpr int64_t kMaxRowChunks = 256;
constexpr int64_t kMinRowsPerChunk = 32;
constexpr int kLanes = 16;              // independent partial sums per channels-first run
constexpr int kMaxLanes = 64;           // lanes of a flat run over rows of c < 16 channels
// Gated runs are cut into sub-pieces of kSubPiece values (a multiple of every lane
// period, 16 to 64), so that a bit mask expands into a buffer in L1; ungated runs are
// cut the same way, which keeps the fused backward's sums bitwise equal to the plain
// backward's on the gated dy.
constexpr int64_t kSubPiece = 3072;

// ---- speed policies (same bits either way) ------------------------------------------
constexpr int64_t kApplyPiece = 16384;  // values per elementwise work item
// Short-row channels-first blocks (chunk_plans.h, walk_block_chunks): at most 32
// channels per block, and only rows under 512 bytes (measured in docs/benchmarks.md:
// 256-byte rows 17 -> 22 GB/s forward training, 2.3 KB rows 20 -> 17).
constexpr int64_t kMaxBlockChannels = 32;
constexpr int64_t kShortRowBytes = 512;
// Bytes of the next slice a channels-first elementwise walk prefetches: slices of a few
// hundred bytes, c * spatial apart, are too short for the hardware prefetcher to catch.
constexpr int64_t kPrefetchBytes = 1024;
// Group norm's channels-first backward sums (backward_sums_slices) prefetch at least this
// far ahead: a slice of 196 floats is summed faster than the next one arrives from L3.
constexpr int64_t kSlicePrefetchBytes = 2048;
// The row-wise forward prefetches up to this much of the next row before each row.
constexpr int64_t kRowPrefetchBytes = 4096;
// Runs shorter than this skip the scalar head that line-aligns the backward map's stores:
// on slices of 196 values the head cost more than the split stores it avoids.
constexpr int64_t kAlignedRunValues = 1024;
// Rows per pass of the row-wise backward map: each column partial is loaded and stored
// once per block (4 rows of 1024 floats, x and dy, are 32 KB: L1 or L2).
constexpr int64_t kRowBlock = 4;

// Below this many values a kernel runs on one thread: 2^15, or 2^19 when waiting OpenMP
// threads sleep (OMP_WAIT_POLICY=passive, read once), as waking one costs as long as a
// thread needs for half a million values.
int64_t min_parallel_values();

// The threads a pass over `values` values uses: 1 below min_parallel_values(), else
// `threads`.
inline int threads_for(int64_t values, int threads) {
  return values < min_parallel_values() ? 1 : threads;
}

// Do `items` whole work items keep `nt` threads busy enough for a fused pass? Each thread
// is busy items / (nt * ceil(items / nt)) of the time; at least 3/4, since the separate
// passes move 1.5x (forward) to 1.7x (backward) the bytes and win below that. Batch
// norm's channels, group norm's groups and channels-last samples all use this rule.
inline bool items_fill_threads(int64_t items, int nt) {
  return nt == 1 || 4 * items >= 3 * int64_t{nt} * ((items + nt - 1) / nt);
}

// Channel blocking: may a channels-first pass keep a channel's slice in cache?
// Forward training reads x twice (statistics, then normalize) and the backward reads x
// and dy twice (sums, then dx). Run channel by channel, each thread reducing a channel
// and normalizing it right after, the second read comes from the core's L2 instead of
// the shared cache or memory: 2T instead of 3T forward, 3T instead of 5T backward
// (../shared/design ARCHITECTURE.md, "Performance model"). That holds while the
// channel's slices (n * spatial values of each tensor read twice) fit in the budget.
//
// The most bytes of slices one channel may have to run fused: twice the core's L2, or
// 1 MiB when the L2 size cannot be read. The elementwise pass walks the slice in reverse
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

// Should an output of `bytes` bytes be written with streaming stores (streaming_store.h)?
// The policy comes from BNORM_STREAMING_STORES, read once: "auto" (default: outputs
// larger than the last-level cache), "always" or "never".
bool use_streaming_stores(int64_t bytes);

// The threshold "auto" uses, in bytes (the last-level cache size, or 32 MiB when it
// cannot be read). For tests: override_streaming_policy(-1) restores the environment's
// policy, 0 forces "always", INT64_MAX "never", other values set the threshold.
int64_t streaming_store_threshold();
void override_streaming_policy(int64_t threshold_bytes);

}  // namespace bnorm::kernels
