// bnorm's MPI communicator: MPI_COMM_WORLD behind a bnorm_collective, so that SyncBN and
// the data-parallel trainer (which only know bnorm_collective) run over MPI. This header
// and mpi_communicator.cpp are the only code that knows MPI (and only the .cpp includes
// mpi.h): the library core builds without it.
//
// Both collectives give the same bits on every process, whatever MPI's algorithm:
//   allgather_f64:      MPI_Allgather.
//   allreduce_sum_f64:  up to kRankOrderDoubles values, MPI_Allgather and a sum in rank
//                       order 0, 1, ..., K-1 on every process (SyncBN's few per-channel
//                       sums: bitwise independent of how MPI combines); above that,
//                       MPI_Reduce to rank 0 then MPI_Bcast (the gradient buckets: one
//                       result computed once, K-fold less traffic than the allgather).
// MPI's errors abort the job (MPI_ERRORS_ARE_FATAL): a lost process ends every process
// with mpirun's message naming its rank, never a hang.
#pragma once

#include <bnorm/sync_batch_norm.h>

#include <cstdint>
#include <memory>

namespace bnorm::dist {

class MpiCommunicator {
 public:
  static constexpr int64_t kRankOrderDoubles = 1 << 14;

  // Initializes MPI unless the program already did (mpi4py, say); finalizes it on
  // destruction only when it initialized it. Every process of the job must construct one.
  MpiCommunicator(int* argc, char*** argv);
  ~MpiCommunicator();
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const { return collective_.rank; }
  int size() const { return collective_.size; }
  // Valid while this communicator lives.
  const bnorm_collective& collective() const { return collective_; }

  // Ends every process of the job with `code` (MPI_Abort), after this process's message.
  [[noreturn]] void abort(int code) const;

 private:
  bool finalize_ = false;
  bnorm_collective collective_{};
};

}  // namespace bnorm::dist
