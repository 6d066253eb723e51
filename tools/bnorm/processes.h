// The processes a bnorm command runs as: this process alone, or one of an mpirun job's
// (data-parallel training). Under a launcher (mpirun sets OMPI_COMM_WORLD_SIZE, Hydra
// PMI_SIZE, PMIx PMIX_RANK) main() joins MPI through src/dist/mpi_communicator; alone,
// no MPI is touched at all.
#pragma once

#include <bnorm/sync_batch_norm.h>

#include <cstdint>

namespace bnorm::cli {

// Joins the launcher's job, if any (call once, first thing in main).
void join_processes(int* argc, char*** argv);

// The job's collective, or null when this process runs alone. Every call through it is
// timed (collective_seconds: the time spent inside, waiting included).
const bnorm_collective* job_collective();
double collective_seconds();
int job_rank();  // 0 alone
int job_size();  // 1 alone

// Ends every process of the job with `code` (after this process's own message): a
// failure on one process never leaves the others waiting in a collective.
[[noreturn]] void abort_job(int code);

// Leaves the job (MPI_Finalize) before a normal exit.
void leave_processes();

}  // namespace bnorm::cli
