// Results are bitwise identical whatever the thread count: chunk boundaries depend on
// the shape alone and chunks merge in a fixed order.
#include <gtest/gtest.h>

#include <bnorm/bnorm.h>

#include <vector>

#include "all_passes.h"

namespace bnorm {
namespace {

TEST(Threads, ResultsAreBitwiseIdenticalForAnyThreadCount) {
  // Channels-first shapes with 5 and 8 channels run channel by channel (fused) at some
  // thread counts and as separate passes at others: the same bits either way.
  // Every shape has 2^19+ values: below that one thread does the work when waiting
  // threads sleep (OMP_WAIT_POLICY=passive, as scripts/test runs), and there would be
  // nothing to compare. (256, 16, 8, 8) runs in channel blocks.
  const test::Shape shapes[] = {{16, 8, 4096, false}, {16, 8, 4096, true}, {3, 5, 40000, false},
                                {4096, 600, 1, false}, {8, 300, 220, true},
                                {512, 16, 64, false}};
  for (const test::Shape& s : shapes) {
    SCOPED_TRACE(s.name());
    bnorm_set_num_threads(1);
    const auto one = test::run_all_passes<float>(s, 0);
    for (int threads : {2, 3, 4, 7}) {
      bnorm_set_num_threads(threads);
      EXPECT_EQ(bnorm_get_num_threads(), threads);
      EXPECT_TRUE(test::run_all_passes<float>(s, 0) == one) << threads << " threads differ from 1";
    }
  }
  bnorm_set_num_threads(0);
  EXPECT_GE(bnorm_get_num_threads(), 1);
}

}  // namespace
}  // namespace bnorm
