// Fused channels-first passes (kernels/policy.h): run channel by channel, each
// channel reduced and then normalized while in cache, they must give the same bits as
// the separate passes — every pass, fused ReLU (mask and y gates), in place, misaligned
// outputs, pieces of long rows, float and double, 1 and 2 threads — and must really run
// where the policy says so.
#include <gtest/gtest.h>

#include <bnorm/bnorm.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "all_passes.h"
#include "kernels/batch_norm.h"
#include "kernels/policy.h"

namespace bnorm::test {
namespace {

// Forces the fused budget for one scope, then restores the environment's.
struct FusedBudget {
  explicit FusedBudget(int64_t bytes) { kernels::override_fused_slice_budget(bytes); }
  ~FusedBudget() { kernels::override_fused_slice_budget(-1); }
};
constexpr int64_t kAny = std::numeric_limits<int64_t>::max();

template <class T>
void expect_fused_changes_nothing() {
  // Around the vector width (16), the 3072-value sub-pieces, the 8192-value reduction
  // chunks (a row longer than one is cut into pieces) and 16384-value apply pieces.
  const Shape shapes[] = {{3, 5, 67 * 101, false}, {2, 17, 3073, false}, {4, 3, 16385, false},
                          {5, 7, 9000, false},     {33, 4, 15, false},   {2, 2, 2, false},
                          {7, 6, 17, false},       {1, 9, 8193, false},
                          // 2^19+ values: two threads even when waiting threads sleep
                          {5, 7, 16000, false},    {300, 20, 90, false},
                          // short rows in channel blocks: more channels than a block
                          {40, 70, 15, false},     {1400, 10, 40, false}};
  for (const int threads : {1, 2}) {
    bnorm_set_num_threads(threads);
    for (const Shape& s : shapes)
      for (const int64_t offset : {0, 3}) {
        SCOPED_TRACE(s.name() + " offset " + std::to_string(offset) + " threads " +
                     std::to_string(threads));
        AllPassOutputs<T> separate, fused;
        {
          FusedBudget never(0);
          separate = run_all_passes<T>(s, offset);
        }
        {
          FusedBudget any(kAny);
          fused = run_all_passes<T>(s, offset);
        }
        EXPECT_TRUE(separate == fused);
      }
  }
  bnorm_set_num_threads(0);
}

TEST(FusedChannels, SameBitsAsSeparatePassesFloat) { expect_fused_changes_nothing<float>(); }
TEST(FusedChannels, SameBitsAsSeparatePassesDouble) { expect_fused_changes_nothing<double>(); }

// The kernels' own answer to "did you run fused?", under each condition of the policy.
struct Probe {
  static kernels::AffineCoefficients<float> forward(void*, int64_t, const kernels::Moments&) {
    return {0, 0, 1, 0};
  }
  static kernels::BackwardCoefficients<float> backward(void*, int64_t, const kernels::BackwardSums&) {
    return {0, 0, 1, 0, 0};
  }
};

bool forward_fused(const kernels::Geometry& g, int threads) {
  std::vector<float> x(static_cast<size_t>(g.n * g.c * g.spatial), 1.0f), y(x.size());
  std::vector<kernels::Moments> moments(static_cast<size_t>(g.c));
  return kernels::batch_norm_forward_fused<float>(g, x.data(), y.data(), moments.data(),
                                                  {nullptr, &Probe::forward}, threads);
}
bool backward_fused(const kernels::Geometry& g, int threads) {
  std::vector<float> x(static_cast<size_t>(g.n * g.c * g.spatial), 1.0f), dx(x.size());
  std::vector<float> center(static_cast<size_t>(g.c));
  std::vector<kernels::BackwardSums> sums(static_cast<size_t>(g.c));
  return kernels::batch_norm_backward_fused<float>(g, x.data(), x.data(), dx.data(),
                                                   center.data(), sums.data(),
                                                   {nullptr, &Probe::backward}, threads);
}

TEST(FusedChannels, RunsWhereThePolicySays) {
  const int64_t environment_budget = kernels::fused_slice_budget();
  const kernels::Geometry big{8, 64, 4096, false};  // 128 KiB slices, 2 MiB per tensor
  {
    FusedBudget any(kAny);
    EXPECT_TRUE(forward_fused(big, 2));
    EXPECT_TRUE(backward_fused(big, 2));
    // Tensors of 2^19+ values, so that every thread count is used (below that one
    // thread does the work, OMP_WAIT_POLICY=passive or not).
    const int64_t s = int64_t{1} << 16;
    EXPECT_TRUE(forward_fused({8, 1, s, false}, 1));   // one thread: any channel count
    EXPECT_FALSE(forward_fused({8, 1, s, false}, 2));  // one channel cannot feed two
    EXPECT_FALSE(forward_fused({8, 2, s, false}, 4));  // 2 of 4 threads busy, below 3/4
    EXPECT_TRUE(forward_fused({8, 3, s, false}, 4));   // 3 of 4: just enough
    EXPECT_TRUE(forward_fused({8, 3, s, false}, 2));   // 2 + 1 channels: 3/4 busy
    EXPECT_FALSE(forward_fused({8, 64, 4096, true}, 2));  // channels-last: rows of channels
    EXPECT_FALSE(forward_fused({4096, 64, 1, false}, 2));  // (N, C): rows of channels
  }
  {
    FusedBudget slice(8 * 4096 * 4);  // one tensor's slice fits, two do not
    EXPECT_TRUE(forward_fused(big, 2));
    EXPECT_FALSE(backward_fused(big, 2));
  }
  {
    FusedBudget never(0);
    EXPECT_FALSE(forward_fused(big, 2));
    EXPECT_FALSE(backward_fused(big, 2));
  }
  EXPECT_EQ(kernels::fused_slice_budget(), environment_budget);  // restored
}

}  // namespace
}  // namespace bnorm::test
