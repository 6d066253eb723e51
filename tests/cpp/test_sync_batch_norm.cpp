// SyncBN (include/bnorm/sync_batch_norm.h) over K = 1..4 threads playing processes
// (thread_collective.h): the checks of sync_checks.h, which tests/mpi/ runs over MPI,
// plus what needs one address space: K = 1 gives one-process batch norm's bits, a
// failing collective, a global batch of one value, and the C++ module.
#include <bnorm/bnorm.hpp>
#include <bnorm/sync_batch_norm.hpp>
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "sync_checks.h"
#include "test_support.h"
#include "thread_collective.h"

namespace bnorm::test {
namespace {

TEST(SyncBatchNorm, MatchesOneProcessOnTheConcatenatedBatch) {
  for (int k = 1; k <= 4; ++k) {
    ThreadGroup group(k);
    for (const SyncCase& sc : sync_cases(k)) {
      group.run([&](const bnorm_collective& comm) {
        expect_sync_matches_one_process<float>(comm, sc);
        expect_sync_matches_one_process<double>(comm, sc);
      });
    }
  }
}

TEST(SyncBatchNorm, ARefusalReachesEveryProcessAndNothingIsWritten) {
  for (int k = 1; k <= 4; ++k) {
    ThreadGroup group(k);
    group.run([&](const bnorm_collective& comm) {
      expect_refusal_reaches_everyone<float>(comm);
      expect_refusal_reaches_everyone<double>(comm);
    });
  }
}

TEST(SyncBatchNorm, OneProcessGivesBatchNormsBits) {
  for (bool last : {false, true}) {
    const int64_t n = 6, c = 9, spatial = 13;
    const bnorm_layout layout = last ? BNORM_CHANNELS_LAST : BNORM_CHANNELS_FIRST;
    const auto x = random_values<float>(n * c * spatial, 3, 4.0, 3.0);
    const auto dy = random_values<float>(n * c * spatial, 4);
    std::vector<float> y1(x.size()), y2(x.size()), dx1(x.size()), dx2(x.size());
    std::vector<float> m1(c), m2(c), i1(c), i2(c), rm1(c, 0), rm2(c, 0), rv1(c, 1), rv2(c, 1);
    std::vector<float> dw1(c), dw2(c), db1(c), db2(c);
    ASSERT_EQ(bnorm_batch_norm_forward_training_ex_f32(layout, n, c, spatial, x.data(), y1.data(),
                                                       nullptr, nullptr, 1e-5, nullptr, rm1.data(),
                                                       rv1.data(), m1.data(), i1.data()),
              BNORM_SUCCESS);
    ASSERT_EQ(bnorm_batch_norm_backward_f32(layout, n, c, spatial, x.data(), dy.data(), dx1.data(),
                                            nullptr, m1.data(), i1.data(), dw1.data(), db1.data()),
              BNORM_SUCCESS);
    ThreadGroup one(1);
    const bnorm_collective& comm = one.collective(0);
    ASSERT_EQ(bnorm_sync_batch_norm_forward_training_f32(&comm, layout, n, c, spatial, x.data(),
                                                         y2.data(), nullptr, nullptr, 1e-5,
                                                         nullptr, rm2.data(), rv2.data(),
                                                         m2.data(), i2.data()),
              BNORM_SUCCESS) << bnorm_last_error();
    ASSERT_EQ(bnorm_sync_batch_norm_backward_f32(&comm, layout, n, c, spatial, x.data(), dy.data(),
                                                 dx2.data(), nullptr, m2.data(), i2.data(),
                                                 dw2.data(), db2.data()),
              BNORM_SUCCESS) << bnorm_last_error();
    for (const auto& [a, b] : {std::pair{&y1, &y2}, {&dx1, &dx2}, {&m1, &m2}, {&i1, &i2},
                               {&rm1, &rm2}, {&rv1, &rv2}, {&dw1, &dw2}, {&db1, &db2}})
      EXPECT_EQ(std::memcmp(a->data(), b->data(), a->size() * sizeof(float)), 0);
  }
}

TEST(SyncBatchNorm, AFailingCollectiveIsAnErrorNamingIt) {
  bnorm_collective broken{nullptr, 0, 1,
                          [](void*, const double*, double*, int64_t) { return 42; },
                          [](void*, double*, int64_t) { return 43; }};
  const int64_t n = 2, c = 3, spatial = 4;
  const auto x = random_values<float>(n * c * spatial, 5);
  std::vector<float> y(x.size(), -7.f), mean(c, -7.f), invstd(c, -7.f);
  EXPECT_EQ(bnorm_sync_batch_norm_forward_training_f32(&broken, BNORM_CHANNELS_FIRST, n, c,
                                                       spatial, x.data(), y.data(), nullptr,
                                                       nullptr, 1e-5, nullptr, nullptr, nullptr,
                                                       mean.data(), invstd.data()),
            BNORM_ERROR_COLLECTIVE);
  EXPECT_NE(std::string(bnorm_last_error()).find("allgather_f64 returned 42"), std::string::npos)
      << bnorm_last_error();
  for (float v : y) ASSERT_EQ(v, -7.f);
  for (float v : mean) ASSERT_EQ(v, -7.f);
  EXPECT_EQ(bnorm_sync_batch_norm_backward_f32(&broken, BNORM_CHANNELS_FIRST, n, c, spatial,
                                               x.data(), x.data(), y.data(), nullptr, mean.data(),
                                               mean.data(), nullptr, nullptr),
            BNORM_ERROR_COLLECTIVE);
  EXPECT_NE(std::string(bnorm_last_error()).find("allreduce_sum_f64 returned 43"),
            std::string::npos) << bnorm_last_error();
  for (float v : y) ASSERT_EQ(v, -7.f);

  bnorm_collective bad_rank = broken;
  bad_rank.rank = 1;
  EXPECT_EQ(bnorm_sync_batch_norm_forward_training_f32(&bad_rank, BNORM_CHANNELS_FIRST, n, c,
                                                       spatial, x.data(), y.data(), nullptr,
                                                       nullptr, 1e-5, nullptr, nullptr, nullptr,
                                                       mean.data(), invstd.data()),
            BNORM_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(bnorm_last_error()).find("rank 1 of size 1"), std::string::npos);
  EXPECT_EQ(bnorm_sync_batch_norm_forward_training_f32(nullptr, BNORM_CHANNELS_FIRST, n, c,
                                                       spatial, x.data(), y.data(), nullptr,
                                                       nullptr, 1e-5, nullptr, nullptr, nullptr,
                                                       mean.data(), invstd.data()),
            BNORM_ERROR_NULL_POINTER);
  EXPECT_STREQ(bnorm_status_string(BNORM_ERROR_COLLECTIVE), "BNORM_ERROR_COLLECTIVE");

  // More channels than a message may carry (an empty slice, so no data is needed).
  ThreadGroup one(1);
  EXPECT_EQ(bnorm_sync_batch_norm_forward_training_f32(&one.collective(0), BNORM_CHANNELS_FIRST,
                                                       0, BNORM_SYNC_MAX_CHANNELS + 1, 1, nullptr,
                                                       nullptr, nullptr, nullptr, 1e-5, nullptr,
                                                       nullptr, nullptr, nullptr, nullptr),
            BNORM_ERROR_INVALID_SHAPE);
  EXPECT_NE(std::string(bnorm_last_error()).find("BNORM_SYNC_MAX_CHANNELS"), std::string::npos)
      << bnorm_last_error();
}

TEST(SyncBatchNorm, OneValueInTheWholeBatchIsRefusedEverywhere) {
  ThreadGroup group(3);
  group.run([](const bnorm_collective& comm) {
    const float one = 2.5f;
    float y = -7.f, mean = -7.f, invstd = -7.f;
    const int64_t n = comm.rank == 1 ? 1 : 0;  // one value in all
    EXPECT_EQ(bnorm_sync_batch_norm_forward_training_f32(
                  &comm, BNORM_CHANNELS_FIRST, n, 1, 1, n ? &one : nullptr, n ? &y : nullptr,
                  nullptr, nullptr, 1e-5, nullptr, nullptr, nullptr, &mean, &invstd),
              BNORM_ERROR_TOO_FEW_VALUES) << bnorm_last_error();
    EXPECT_EQ(y, -7.f);
    EXPECT_EQ(mean, -7.f);
  });
}

TEST(SyncBatchNorm, ModuleMatchesBatchNormOnTheConcatenatedBatchAndCountsCollectives) {
  const int k = 3;
  const std::vector<int64_t> slices = {3, 0, 2};
  const int64_t n = 5, c = 4, h = 3, w = 2, per_sample = c * h * w;
  const auto x = random_values<double>(n * per_sample, 31, -3.0, 1.5);
  const auto dy = random_values<double>(n * per_sample, 32);
  BatchNorm<double> whole(c);
  std::vector<double> y(x.size()), dx(x.size());
  whole.forward({x.data(), {n, c, h, w}}, {y.data(), {n, c, h, w}});
  whole.backward({x.data(), {n, c, h, w}}, {dy.data(), {n, c, h, w}}, {dx.data(), {n, c, h, w}});

  ThreadGroup group(k);
  group.run([&](const bnorm_collective& comm) {
    CountingCollective counting{&comm};
    const bnorm_collective counted = counting.view();
    SyncBatchNorm<double> bn(c, counted);
    const int64_t begin = comm.rank == 0 ? 0 : comm.rank == 1 ? 3 : 3;
    const int64_t mine = slices[static_cast<size_t>(comm.rank)];
    std::vector<double> y_mine(static_cast<size_t>(mine * per_sample)), dx_mine(y_mine.size());
    const TensorView<const double> xv{x.data() + begin * per_sample, {mine, c, h, w}};
    bn.forward(xv, {y_mine.data(), {mine, c, h, w}});
    bn.backward(xv, {dy.data() + begin * per_sample, {mine, c, h, w}},
                {dx_mine.data(), {mine, c, h, w}});
    EXPECT_EQ(counting.allgathers, 1);
    EXPECT_EQ(counting.allreduces, 1);
    for (int64_t i = 0; i < mine * per_sample; ++i) {
      EXPECT_NEAR(y_mine[static_cast<size_t>(i)], y[static_cast<size_t>(begin * per_sample + i)], 1e-12);
      EXPECT_NEAR(dx_mine[static_cast<size_t>(i)], dx[static_cast<size_t>(begin * per_sample + i)], 1e-12);
    }
    for (int64_t ch = 0; ch < c; ++ch) {
      const auto i = static_cast<size_t>(ch);
      EXPECT_NEAR(bn.running_mean()[i], whole.running_mean()[i], 1e-12);
      EXPECT_NEAR(bn.running_var()[i], whole.running_var()[i], 1e-12);
      EXPECT_NEAR(bn.grad_weight()[i], whole.grad_weight()[i], 1e-12);
      EXPECT_NEAR(bn.grad_bias()[i], whole.grad_bias()[i], 1e-12);
    }
    EXPECT_EQ(bn.num_batches_tracked(), 1);

    // Eval mode talks to nobody: running statistics, as BatchNorm.
    bn.eval();
    if (mine > 0) {
      bn.forward(xv, {y_mine.data(), {mine, c, h, w}});
      bn.backward(xv, {dy.data() + begin * per_sample, {mine, c, h, w}},
                  {dx_mine.data(), {mine, c, h, w}});
    }
    EXPECT_EQ(counting.allgathers, 1);
    EXPECT_EQ(counting.allreduces, 1);

    // A module refusing its input (wrong channel count on one process) in training mode
    // still joins the collective: every process throws, none waits.
    bn.train();
    const int64_t wrong_c = comm.rank == 2 ? c + 1 : c;
    std::vector<double> big(static_cast<size_t>(2 * (c + 1) * h * w), 1.0), out(big.size());
    try {
      bn.forward({big.data(), {2, wrong_c, h, w}}, {out.data(), {2, wrong_c, h, w}});
      ADD_FAILURE() << "no error on rank " << comm.rank;
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), comm.rank == 2 ? BNORM_ERROR_SHAPE_MISMATCH : BNORM_ERROR_COLLECTIVE)
          << e.what();
    }
    EXPECT_EQ(counting.allgathers, 2);

    // synchronize(nullptr): this process's batch alone again, no collective at all.
    bn.synchronize(nullptr);
    EXPECT_EQ(bn.collective(), nullptr);
    std::vector<double> local(static_cast<size_t>(2 * per_sample)), local_out(local.size());
    for (size_t i = 0; i < local.size(); ++i) local[i] = static_cast<double>(i % 7) + comm.rank;
    bn.forward({local.data(), {2, c, h, w}}, {local_out.data(), {2, c, h, w}});
    bn.backward({local.data(), {2, c, h, w}}, {local.data(), {2, c, h, w}},
                {local_out.data(), {2, c, h, w}});
    EXPECT_EQ(counting.allgathers, 2);
    EXPECT_EQ(counting.allreduces, 1);
  });
}

}  // namespace
}  // namespace bnorm::test
