// SyncBN and bnorm's MPI communicator under mpirun (tests/CMakeLists.txt runs this with
// K = 1, 2, 3, 4 processes): the checks of tests/cpp/sync_checks.h over real MPI, and the
// communicator's collectives: the same bits on every process.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "dist/mpi_communicator.h"
#include "sync_checks.h"

namespace bnorm::test {
namespace {

const dist::MpiCommunicator* world = nullptr;

TEST(MpiSyncBatchNorm, MatchesOneProcessOnTheConcatenatedBatch) {
  for (const SyncCase& sc : sync_cases(world->size())) {
    expect_sync_matches_one_process<float>(world->collective(), sc);
    expect_sync_matches_one_process<double>(world->collective(), sc);
  }
}

TEST(MpiSyncBatchNorm, ARefusalReachesEveryProcessAndNothingIsWritten) {
  expect_refusal_reaches_everyone<float>(world->collective());
  expect_refusal_reaches_everyone<double>(world->collective());
}

// Both of allreduce_sum_f64's ways (rank order for short messages, reduce + broadcast
// for long ones) give the sum, with the same bits on every process.
TEST(MpiCommunicator, AllreduceSumIsTheSameEverywhere) {
  const bnorm_collective& comm = world->collective();
  for (int64_t count : {int64_t{1}, int64_t{37}, dist::MpiCommunicator::kRankOrderDoubles,
                        dist::MpiCommunicator::kRankOrderDoubles + 5}) {
    std::vector<double> values(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i)
      values[static_cast<size_t>(i)] = 0.1 * static_cast<double>(comm.rank + 1) + 1e-3 * static_cast<double>(i);
    ASSERT_EQ(comm.allreduce_sum_f64(comm.context, values.data(), count), 0);
    const double k = comm.size;
    for (int64_t i = 0; i < count; i += 1 + count / 50)
      EXPECT_NEAR(values[static_cast<size_t>(i)],
                  0.1 * k * (k + 1) / 2 + 1e-3 * static_cast<double>(i) * k, 1e-12);
    expect_same_bits_everywhere(comm, values, "allreduce_sum_f64");
  }
}

TEST(MpiCommunicator, AllgatherIsInRankOrder) {
  const bnorm_collective& comm = world->collective();
  const double mine[2] = {static_cast<double>(comm.rank), -static_cast<double>(comm.rank)};
  std::vector<double> all(static_cast<size_t>(2 * comm.size));
  ASSERT_EQ(comm.allgather_f64(comm.context, mine, all.data(), 2), 0);
  for (int r = 0; r < comm.size; ++r) {
    EXPECT_EQ(all[static_cast<size_t>(2 * r)], r);
    EXPECT_EQ(all[static_cast<size_t>(2 * r + 1)], -r);
  }
}

}  // namespace
}  // namespace bnorm::test

int main(int argc, char** argv) {
  bnorm::dist::MpiCommunicator comm(&argc, &argv);
  bnorm::test::world = &comm;
  ::testing::InitGoogleTest(&argc, argv);
  // Rank 0 prints every test; the others only their failures (and exit non-zero).
  if (comm.rank() != 0) GTEST_FLAG_SET(brief, true);
  return RUN_ALL_TESTS();
}
