// Streaming (non-temporal) stores: forced on, every elementwise pass must write the same
// bits as with ordinary stores — both layouts, in place, fused ReLU mask, outputs that
// start off a cache line, and float and double.
#include <gtest/gtest.h>

#include <bnorm/bnorm.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <limits>
#include <vector>

#include "kernels/policy.h"
#include "kernels/streaming_store.h"
#include "all_passes.h"

namespace bnorm::test {
namespace {

// Forces the policy for one scope, then restores the environment's.
struct StreamingPolicy {
  explicit StreamingPolicy(bool stream) {
    kernels::override_streaming_policy(stream ? 0 : std::numeric_limits<int64_t>::max());
  }
  ~StreamingPolicy() { kernels::override_streaming_policy(-1); }
};

template <class T>
void expect_streaming_changes_nothing() {
  const Shape shapes[] = {{3, 5, 67 * 101, false}, {2, 17, 3073, false}, {7, 2001, 5, true},
                          {5, 3, 1001, true}, {4, 40, 1, false}};
  for (const Shape& s : shapes)
    for (const int64_t offset : {0, 3}) {
      SCOPED_TRACE(s.name() + " offset " + std::to_string(offset));
      AllPassOutputs<T> ordinary, streamed;
      {
        StreamingPolicy never(false);
        ordinary = run_all_passes<T>(s, offset);
      }
      {
        StreamingPolicy always(true);
        streamed = run_all_passes<T>(s, offset);
      }
      EXPECT_TRUE(ordinary == streamed);
    }
}

TEST(StreamingStores, SameBitsAsOrdinaryStoresFloat) { expect_streaming_changes_nothing<float>(); }
TEST(StreamingStores, SameBitsAsOrdinaryStoresDouble) { expect_streaming_changes_nothing<double>(); }

TEST(StreamingStores, CopyHandlesEveryAlignmentAndLength) {
  std::vector<float> src(300), dst(310);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<float>(i) + 0.5f;
  for (int64_t offset = 0; offset < 17; ++offset)
    for (const int64_t len : {0, 1, 15, 16, 17, 31, 64, 255, 290}) {
      std::fill(dst.begin(), dst.end(), -1.0f);
      kernels::stream_store(src.data(), dst.data() + offset, len);
      for (int64_t i = 0; i < static_cast<int64_t>(dst.size()); ++i) {
        const bool inside = i >= offset && i < offset + len;
        ASSERT_EQ(dst[i], inside ? src[i - offset] : -1.0f) << "offset " << offset << " len " << len;
      }
    }
}

TEST(StreamingStores, PolicyThresholdIsTheOutputSize) {
  kernels::override_streaming_policy(1000);
  EXPECT_FALSE(kernels::use_streaming_stores(1000));
  EXPECT_TRUE(kernels::use_streaming_stores(1001));
  kernels::override_streaming_policy(-1);
  EXPECT_GT(kernels::streaming_store_threshold(), 0);
}

}  // namespace
}  // namespace bnorm::test
