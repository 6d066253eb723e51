#include "processes.h"

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
#else
  (void)argc;
  (void)argv;
  std::fprintf(stderr, "bnorm: warning: started by an MPI launcher, but this bnorm was built "
                       "without MPI (-DBNORM_WITH_MPI=OFF): each process runs alone\n");
#endif
}

const bnorm_collective* job_collective() {
#ifdef BNORM_HAVE_MPI
  if (communicator) return &communicator->collective();
#endif
  return nullptr;
}

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
  communicator.reset();
#endif
}

}  // namespace bnorm::cli
