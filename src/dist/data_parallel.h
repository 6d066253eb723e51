// Data-parallel training over a bnorm_collective (MPI's, or any other): what the trainer
// (src/nn/trainer.cpp) needs to make K processes train exactly as one process on the
// same global batches.
//   - batch_slice: which examples of a global batch are this process's;
//   - GradientAllreduce: one sum over the processes per step of every gradient (in
//     buckets), of the batch's loss totals, and of rank 0's values of the buffers that
//     are not synchronized otherwise (per-process batch norm's running statistics: DDP's
//     broadcast_buffers);
//   - state_fingerprint / check_same_everywhere: a cheap, periodic proof that every
//     process holds the same parameters, and a loud failure when not;
//   - check_same_settings: processes started with different options refuse at start.
// It knows nothing of MPI (src/dist/mpi_communicator.h), only the public collective.
#pragma once

#include <bnorm/sync_batch_norm.h>

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace bnorm::dist {

// This process's examples [begin, begin + count) of a global batch of `batch` examples
// over `size` processes: batch / size each, one more for each of the lowest
// batch % size ranks. Deterministic: every process computes every slice alike.
struct Slice {
  int64_t begin = 0, count = 0;
};
Slice batch_slice(int64_t batch, int rank, int size);

// The smallest batch of an epoch of `examples` in batches of `batch`: the last one when
// `batch` does not divide `examples`, the whole set when it is smaller than a batch.
int64_t smallest_batch(int64_t examples, int64_t batch);

// Every batch of an epoch must give each of `processes` an example: std::invalid_argument
// naming the smallest batch otherwise.
void check_batches_split(int64_t examples, int64_t batch, int processes);

class GradientAllreduce {
 public:
  // Values per allreduce call (bucket): 256 KiB of doubles.
  static constexpr int64_t kBucketValues = int64_t{1} << 15;

  // gradients: summed over the processes, in place. rank0_values: every process gets
  // rank 0's values. extras: how many doubles run() sums beside them.
  GradientAllreduce(const bnorm_collective& collective, std::vector<std::span<float>> gradients,
                    std::vector<std::span<float>> rank0_values, int extras);

  // One step's sums, in place; `extras` are summed too (the loss totals). Every process
  // must call it with the same lists.
  void run(std::span<double> extras);

  int64_t buckets() const;  // allreduce calls per run
  int64_t values() const { return static_cast<int64_t>(flat_.size()); }

 private:
  const bnorm_collective* collective_;
  std::vector<std::span<float>> gradients_, rank0_values_;
  std::vector<double> flat_;
};

// A 64-bit fingerprint (FNV-1a) of the bytes of some float arrays.
uint64_t state_fingerprint(const std::vector<std::span<const float>>& arrays);

// Throws std::runtime_error when the processes' fingerprints differ, naming the ranks
// that differ from rank 0 and `when` ("after step 100").
void check_same_everywhere(const bnorm_collective& collective, uint64_t fingerprint,
                           const std::string& when);

// Every process gives the same (name, value) list: its options. Throws
// std::runtime_error, on every process, when any value differs from rank 0's: the
// message names the option and the ranks, and on a differing rank its own value.
void check_same_settings(const bnorm_collective& collective,
                         const std::vector<std::pair<std::string, std::string>>& settings);

}  // namespace bnorm::dist
