// SyncBN's front-end (include/bnorm/sync_batch_norm.h states the contract): batch norm
// over a batch split across processes, in four steps, each process
//   1. reduces its slice (kernels: batch_norm_moments / batch_norm_backward_sums),
//   2. makes ONE collective call through the caller's bnorm_collective, carrying its
//      verdict on its own arguments beside its partial statistics,
//   3. merges the parts in rank order and computes the per-channel coefficients
//      (norm/batch_norm_steps.h, the same code as one-process batch norm),
//   4. runs the elementwise pass over its slice (kernels).
// No communication library is included here: MPI lives in mpi_communicator.cpp.
#pragma once

#include <bnorm/sync_batch_norm.h>
#include <bnorm/error.hpp>

#include <new>
#include <optional>
#include <string>

#include "norm/batch_norm.h"

namespace bnorm::dist {

// A process's own checks, run before the collective: the error they throw (a
// std::bad_alloc counting as BNORM_ERROR_OUT_OF_MEMORY) is kept, not thrown, so that the
// process still joins the collective and every other process learns of it; nullopt when
// they pass. A refusal the caller already made (`earlier`) wins and skips the checks.
template <class F>
std::optional<bnorm::Error> refusal_of(const char* op, const bnorm::Error* earlier, F&& checks) {
  if (earlier) return *earlier;
  try {
    checks();
  } catch (const bnorm::Error& e) {
    return e;
  } catch (const std::bad_alloc&) {
    return bnorm::Error(BNORM_ERROR_OUT_OF_MEMORY,
                        std::string(op) + ": out of memory allocating scratch space");
  }
  return std::nullopt;
}

// Doubles each process sends: forward [verdict, count, mean[c], m2[c]] (allgather),
// backward [verdict, count, dy_sum[c], dy_xc_sum[c], xc_sum[c]] (allreduce-sum).
inline int64_t forward_message_doubles(int64_t c) { return 2 + 2 * c; }
inline int64_t backward_message_doubles(int64_t c) { return 2 + 3 * c; }

// p.n >= 0 is this process's slice; the rest as norm::forward_training / norm::backward.
// `refused`: a caller that already refused the arguments (the C++ API's checks) passes
// its error, which travels through the collective like the front-end's own; the call
// then throws it.
template <class T>
void sync_forward_training(const char* op, const bnorm_collective* collective,
                           const norm::Problem& p, const T* x, T* y, const T* weight,
                           const T* bias, double eps, const bnorm_running_stats_update& update,
                           T* running_mean, T* running_var, T* save_mean, T* save_invstd,
                           const bnorm::Error* refused = nullptr);

template <class T>
void sync_backward(const char* op, const bnorm_collective* collective, const norm::Problem& p,
                   const T* x, const T* dy, T* dx, const T* weight, const T* save_mean,
                   const T* save_invstd, T* dweight, T* dbias,
                   const bnorm::Error* refused = nullptr);

}  // namespace bnorm::dist
