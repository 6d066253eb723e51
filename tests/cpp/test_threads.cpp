// Results are bitwise identical whatever the thread count: chunk boundaries depend on
// the shape alone and chunks merge in a fixed order.
#include <gtest/gtest.h>

#include <bnorm/bnorm.h>

#include <vector>

#include "test_support.h"

namespace bnorm {
namespace {

struct Outputs {
  std::vector<float> y, mean, invstd, running_mean, running_var, dx, dweight, dbias;
  bool operator==(const Outputs&) const = default;
};

Outputs run_all(const test::Shape& s, const std::vector<float>& x, const std::vector<float>& dy) {
  Outputs o{std::vector<float>(x.size()), std::vector<float>(s.c), std::vector<float>(s.c),
            std::vector<float>(s.c, 0.f),   std::vector<float>(s.c, 1.f), std::vector<float>(x.size()),
            std::vector<float>(s.c),        std::vector<float>(s.c)};
  EXPECT_EQ(bnorm_batch_norm_forward_training_f32(s.layout(), s.n, s.c, s.spatial, x.data(),
                                                  o.y.data(), nullptr, nullptr, 1e-5, 0.1,
                                                  o.running_mean.data(), o.running_var.data(),
                                                  o.mean.data(), o.invstd.data()),
            BNORM_SUCCESS);
  EXPECT_EQ(bnorm_batch_norm_backward_f32(s.layout(), s.n, s.c, s.spatial, x.data(), dy.data(),
                                          o.dx.data(), nullptr, o.mean.data(), o.invstd.data(),
                                          o.dweight.data(), o.dbias.data()),
            BNORM_SUCCESS);
  return o;
}

TEST(Threads, ResultsAreBitwiseIdenticalForAnyThreadCount) {
  const test::Shape shapes[] = {{16, 8, 4096, false}, {16, 8, 4096, true}, {3, 5, 20000, false},
                                {4096, 600, 1, false}, {8, 300, 33, true}};
  for (const test::Shape& s : shapes) {
    SCOPED_TRACE(s.name());
    const auto x = test::random_values<float>(s.size(), 5, 3.0, 2.0);
    const auto dy = test::random_values<float>(s.size(), 6);
    bnorm_set_num_threads(1);
    const Outputs one = run_all(s, x, dy);
    for (int threads : {2, 3, 4, 7}) {
      bnorm_set_num_threads(threads);
      EXPECT_EQ(bnorm_get_num_threads(), threads);
      EXPECT_TRUE(run_all(s, x, dy) == one) << threads << " threads differ from 1";
    }
  }
  bnorm_set_num_threads(0);
  EXPECT_GE(bnorm_get_num_threads(), 1);
}

}  // namespace
}  // namespace bnorm
