// Non-temporal ("streaming") stores for outputs that do not fit in cache.
//
// An ordinary store first reads the destination line into cache (read-for-ownership)
// and later evicts it: 3T of traffic for T written, and it pushes the input out of
// cache. A streaming store writes the line straight to memory: 2T. It only pays when the
// output will not be read again soon from cache, i.e. when it is larger than the
// last-level cache; below that it is slower (the next layer reads the output from
// memory instead of cache). The passes compute a piece into a buffer in L1 and stream
// it out with these.
#pragma once

#include <cstdint>

namespace bnorm::kernels {

// dst[0 .. len) = src[0 .. len) with streaming stores for the 64-byte-aligned part
// (ordinary stores at the unaligned edges), followed by a store fence.
void stream_store(const float* src, float* dst, int64_t len);
void stream_store(const double* src, double* dst, int64_t len);

// Should an output of `bytes` bytes be written with streaming stores? The policy comes
// from BNORM_STREAMING_STORES, read once: "auto" (default: outputs larger than the
// last-level cache), "always" or "never".
bool use_streaming_stores(int64_t bytes);

// The threshold "auto" uses, in bytes (the last-level cache size, or 32 MiB when it
// cannot be read). For tests: override_streaming_policy(-1) restores the environment's
// policy, 0 forces "always", INT64_MAX "never", other values set the threshold.
int64_t streaming_store_threshold();
void override_streaming_policy(int64_t threshold_bytes);

}  // namespace bnorm::kernels
