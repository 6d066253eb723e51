// Data-parallel training's pieces (src/dist/data_parallel.h) over K threads playing
// processes (tests/cpp/thread_collective.h); the whole trainer runs under mpirun in
// tests/python/test_mpi_train.py.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "../thread_collective.h"
#include "dist/data_parallel.h"

namespace bnorm::test {
namespace {

TEST(DataParallel, BatchSliceSplitsEveryBatchWholeInRankOrder) {
  for (int size = 1; size <= 5; ++size)
    for (int64_t batch = 0; batch <= 23; ++batch) {
      int64_t next = 0;
      for (int r = 0; r < size; ++r) {
        const dist::Slice s = dist::batch_slice(batch, r, size);
        EXPECT_EQ(s.begin, next) << batch << " over " << size;
        // batch / size each, the remainder one each to the lowest ranks
        EXPECT_EQ(s.count, batch / size + (r < batch % size ? 1 : 0));
        next = s.begin + s.count;
      }
      EXPECT_EQ(next, batch);
    }
}

TEST(DataParallel, SmallestBatchIsTheLastOneOrTheWholeSet) {
  EXPECT_EQ(dist::smallest_batch(3000, 64), 56);    // 46 full batches, then 56
  EXPECT_EQ(dist::smallest_batch(60000, 256), 96);
  EXPECT_EQ(dist::smallest_batch(512, 64), 64);     // divides: every batch is full
  EXPECT_EQ(dist::smallest_batch(10, 64), 10);      // fewer examples than a batch
}

TEST(DataParallel, GradientAllreduceSumsGradientsAndExtrasAndSharesRankZerosBuffers) {
  const int k = 3;
  ThreadGroup group(k);
  // Two gradients spanning more than one bucket, one buffer, two extras.
  const int64_t big = dist::GradientAllreduce::kBucketValues + 7;
  group.run([&](const bnorm_collective& comm) {
    std::vector<float> g1(static_cast<size_t>(big)), g2(5), buffer(4);
    for (size_t i = 0; i < g1.size(); ++i) g1[i] = static_cast<float>(comm.rank + 1) * static_cast<float>(i % 13);
    for (size_t i = 0; i < g2.size(); ++i) g2[i] = static_cast<float>(comm.rank) - 0.5f;
    for (size_t i = 0; i < buffer.size(); ++i) buffer[i] = static_cast<float>(10 * comm.rank + i);
    dist::GradientAllreduce reduce(comm, {g1, g2}, {buffer}, 2);
    EXPECT_EQ(reduce.buckets(), 2);
    double extras[2] = {1.5 * comm.rank, 1.0};
    reduce.run(extras);
    for (size_t i = 0; i < g1.size(); i += 97) EXPECT_EQ(g1[i], 6.0f * static_cast<float>(i % 13));  // 1+2+3
    for (float v : g2) EXPECT_EQ(v, 1.5f);  // -0.5 + 0.5 + 1.5
    for (size_t i = 0; i < buffer.size(); ++i) EXPECT_EQ(buffer[i], static_cast<float>(i));  // rank 0's
    EXPECT_EQ(extras[0], 4.5);
    EXPECT_EQ(extras[1], 3.0);
  });
}

TEST(DataParallel, DivergedParametersStopEveryProcessNamingTheRank) {
  ThreadGroup group(3);
  group.run([](const bnorm_collective& comm) {
    std::vector<float> weights(10, 0.25f);
    const auto same = dist::state_fingerprint({weights});
    EXPECT_NO_THROW(dist::check_same_everywhere(comm, same, "after step 100"));
    if (comm.rank == 2) weights[9] = std::nextafter(0.25f, 1.0f);  // one bit on one process
    try {
      dist::check_same_everywhere(comm, dist::state_fingerprint({weights}), "after step 200");
      ADD_FAILURE() << "no error on rank " << comm.rank;
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("process(es) 2 differ from rank 0's after step 200"),
                std::string::npos) << e.what();
    }
  });
}

TEST(DataParallel, DifferentSettingsAreRefusedNamingTheOptionAndValue) {
  ThreadGroup group(3);
  group.run([](const bnorm_collective& comm) {
    using Settings = std::vector<std::pair<std::string, std::string>>;
    EXPECT_NO_THROW(dist::check_same_settings(comm, Settings{{"--model", "lenet-bn"}, {"--lr", "1"}}));
    const Settings mine{{"--model", "lenet-bn"}, {"--lr", comm.rank == 1 ? "0.5" : "1"}};
    try {
      dist::check_same_settings(comm, mine);
      ADD_FAILURE() << "no error on rank " << comm.rank;
    } catch (const std::runtime_error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("different --lr (rank(s) 1 differ from rank 0"), std::string::npos) << what;
      if (comm.rank == 1) {
        EXPECT_NE(what.find("has '0.5'"), std::string::npos) << what;
      }
    }
    // A build listing other settings is named as such.
    Settings other{{"--model", "lenet-bn"}};
    if (comm.rank == 2) other.push_back({"--new-option", "x"});
    EXPECT_THROW(dist::check_same_settings(comm, other), std::runtime_error);
  });
}

}  // namespace
}  // namespace bnorm::test
