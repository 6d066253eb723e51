// Non-temporal ("streaming") stores for outputs that do not fit in cache.
//
// An ordinary store first reads the destination line into cache (read-for-ownership)
// and later evicts it: 3T of traffic for T written, and it pushes the input out of
// cache. A streaming store writes the line straight to memory: 2T. It only pays when the
// output will not be read again soon from cache, i.e. when it is larger than the
// last-level cache; below that it is slower (the next layer reads the output from
// memory instead of cache). The passes compute a piece into a buffer in L1 and stream
// it out with these. When to stream: use_streaming_stores() in policy.h.
#pragma once

#include <cstdint>

namespace bnorm::kernels {

// dst[0 .. len) = src[0 .. len) with streaming stores for the 64-byte-aligned part
// (ordinary stores at the unaligned edges), followed by a store fence.
void stream_store(const float* src, float* dst, int64_t len);
void stream_store(const double* src, double* dst, int64_t len);

}  // namespace bnorm::kernels
