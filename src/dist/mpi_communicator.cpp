// The only file of bnorm that includes mpi.h (mpi_communicator.h says what it does).
#include "dist/mpi_communicator.h"

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

namespace bnorm::dist {
namespace {

// MPI counts are int: longer messages go in pieces of at most this many values.
constexpr int64_t kMaxPiece = INT_MAX / 2;

int allgather_f64(void*, const double* send, double* recv, int64_t count) {
  if (count > kMaxPiece) return MPI_ERR_COUNT;
  return MPI_Allgather(send, static_cast<int>(count), MPI_DOUBLE, recv, static_cast<int>(count),
                       MPI_DOUBLE, MPI_COMM_WORLD);
}

int allreduce_sum_f64(void*, double* values, int64_t count) {
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (count <= MpiCommunicator::kRankOrderDoubles) {
    thread_local std::vector<double> all;
    all.resize(static_cast<size_t>(count) * static_cast<size_t>(size));
    if (const int rc = allgather_f64(nullptr, values, all.data(), count); rc != MPI_SUCCESS)
      return rc;
    for (int64_t i = 0; i < count; ++i) {
      double sum = all[static_cast<size_t>(i)];
      for (int r = 1; r < size; ++r) sum += all[static_cast<size_t>(r * count + i)];
      values[i] = sum;
    }
    return MPI_SUCCESS;
  }
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  for (int64_t at = 0; at < count; at += kMaxPiece) {
    const int piece = static_cast<int>(std::min(kMaxPiece, count - at));
    double* p = values + at;
    const int rc = rank == 0 ? MPI_Reduce(MPI_IN_PLACE, p, piece, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD)
                             : MPI_Reduce(p, nullptr, piece, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return rc;
    if (const int b = MPI_Bcast(p, piece, MPI_DOUBLE, 0, MPI_COMM_WORLD); b != MPI_SUCCESS) return b;
  }
  return MPI_SUCCESS;
}

}  // namespace

MpiCommunicator::MpiCommunicator(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    // One thread calls MPI (bnorm's OpenMP threads never do).
    int provided = 0;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
      throw std::runtime_error("MPI_Init_thread failed");
    finalize_ = true;
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  collective_ = bnorm_collective{nullptr, rank, size, &allgather_f64, &allreduce_sum_f64};
}

MpiCommunicator::~MpiCommunicator() {
  if (finalize_) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
}

void MpiCommunicator::abort(int code) const {
  std::fflush(stdout);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, code);
  std::abort();  // MPI_Abort does not return; this keeps [[noreturn]] honest
}

}  // namespace bnorm::dist
