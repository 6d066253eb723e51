#include "processes.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>

#ifdef BNORM_HAVE_MPI
#include "dist/mpi_communicator.h"
#endif

namespace bnorm::cli {
namespace {

#ifdef BNORM_HAVE_MPI
std::unique_ptr<dist::MpiCommunicator> communicator;
#endif

// The job's collective with a stopwatch around each call.
struct Timed {
  const bnorm_collective* inner = nullptr;
  bnorm_collective outer{};
  double seconds = 0;

  template <class F>
  int time(F&& call) {
    const auto t0 = std::chrono::steady_clock::now();
    const int rc = call();
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return rc;
  }
  static int allgather(void* self, const double* send, double* recv, int64_t count) {
    auto* t = static_cast<Timed*>(self);
    return t->time([&] { return t->inner->allgather_f64(t->inner->context, send, recv, count); });
  }
  static int allreduce(void* self, double* values, int64_t count) {
    auto* t = static_cast<Timed*>(self);
    return t->time([&] { return t->inner->allreduce_sum_f64(t->inner->context, values, count); });
  }
};
Timed timed;

bool under_launcher() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    if (std::getenv(name)) return true;
  return false;
}

}  // namespace

void join_processes(int* argc, char*** argv) {
  if (!under_launcher()) return;
#ifdef BNORM_HAVE_MPI
  communicator = std::make_unique<dist::MpiCommunicator>(argc, argv);
  timed.inner = &communicator->collective();
  timed.outer = bnorm_collective{&timed, timed.inner->rank, timed.inner->size, &Timed::allgather,
                                 &Timed::allreduce};
#else
  (void)argc;
  (void)argv;
  // Each process would run alone and write the same outputs: refuse, unless it is alone.
  const char* size = nullptr;
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"})
    if (!size) size = std::getenv(name);
  if (!size || std::atoi(size) != 1) {
    std::fprintf(stderr, "bnorm: error: started by an MPI launcher (%s processes), but this bnorm "
                         "was built without MPI (-DBNORM_WITH_MPI=OFF): run it without mpirun, or "
                         "build it with MPI\n", size ? size : "some");
    std::exit(2);
  }
#endif
}

const bnorm_collective* job_collective() { return timed.inner ? &timed.outer : nullptr; }
double collective_seconds() { return timed.seconds; }

int job_rank() { return job_collective() ? job_collective()->rank : 0; }
int job_size() { return job_collective() ? job_collective()->size : 1; }

void abort_job(int code) {
#ifdef BNORM_HAVE_MPI
  if (communicator && communicator->size() > 1) communicator->abort(code);
#endif
  std::exit(code);
}

void leave_processes() {
#ifdef BNORM_HAVE_MPI
  timed.inner = nullptr;
  communicator.reset();
#endif
}

}  // namespace bnorm::cli
