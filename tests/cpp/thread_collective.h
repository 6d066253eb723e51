// A bnorm_collective over threads of one process: K "processes" as K std::threads that
// share memory. It lets the SyncBN tests run in ctest without MPI; the same checks run
// over MPI in tests/mpi/. Both collectives combine in rank order, so every thread gets
// the same bits, as the contract asks.
#pragma once

#include <bnorm/sync_batch_norm.h>

#include <barrier>
#include <cstdint>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

namespace bnorm::test {

class ThreadGroup {
 public:
  explicit ThreadGroup(int size)
      : size_(size), barrier_(size), slots_(static_cast<size_t>(size)),
        collectives_(static_cast<size_t>(size)), members_(static_cast<size_t>(size)) {
    for (int r = 0; r < size; ++r) {
      members_[static_cast<size_t>(r)] = Member{this, r};
      collectives_[static_cast<size_t>(r)] = bnorm_collective{
          &members_[static_cast<size_t>(r)], r, size, &allgather, &allreduce_sum};
    }
  }

  // Runs body(collective of rank r) on K threads at once and joins them.
  void run(const std::function<void(const bnorm_collective&)>& body) {
    std::vector<std::thread> threads;
    for (int r = 0; r < size_; ++r)
      threads.emplace_back([&, r] { body(collectives_[static_cast<size_t>(r)]); });
    for (auto& t : threads) t.join();
  }

  // The collective of rank r (to call from the thread that plays it).
  const bnorm_collective& collective(int r) const { return collectives_[static_cast<size_t>(r)]; }

 private:
  struct Member {
    ThreadGroup* group;
    int rank;
  };

  static int allgather(void* context, const double* send, double* recv, int64_t count) {
    auto* m = static_cast<Member*>(context);
    ThreadGroup& g = *m->group;
    g.slots_[static_cast<size_t>(m->rank)].assign(send, send + count);
    g.barrier_.arrive_and_wait();
    // Counts that disagree fail on every thread, after the same two barriers (no thread
    // is left waiting).
    int status = 0;
    for (int r = 0; r < g.size_; ++r)
      if (static_cast<int64_t>(g.slots_[static_cast<size_t>(r)].size()) != count) status = 1;
    for (int r = 0; r < g.size_ && status == 0; ++r)
      std::memcpy(recv + r * count, g.slots_[static_cast<size_t>(r)].data(),
                  static_cast<size_t>(count) * sizeof(double));
    g.barrier_.arrive_and_wait();
    return status;
  }

  static int allreduce_sum(void* context, double* values, int64_t count) {
    auto* m = static_cast<Member*>(context);
    ThreadGroup& g = *m->group;
    g.slots_[static_cast<size_t>(m->rank)].assign(values, values + count);
    g.barrier_.arrive_and_wait();
    int status = 0;
    for (int r = 0; r < g.size_; ++r)  // counts disagree: fail, as allgather does
      if (static_cast<int64_t>(g.slots_[static_cast<size_t>(r)].size()) != count) status = 1;
    for (int64_t i = 0; i < count && status == 0; ++i) {
      double sum = 0;
      for (int r = 0; r < g.size_; ++r) sum += g.slots_[static_cast<size_t>(r)][static_cast<size_t>(i)];
      values[i] = sum;
    }
    g.barrier_.arrive_and_wait();
    return status;
  }

  int size_;
  std::barrier<> barrier_;
  std::vector<std::vector<double>> slots_;
  std::vector<bnorm_collective> collectives_;
  std::vector<Member> members_;
};

}  // namespace bnorm::test
