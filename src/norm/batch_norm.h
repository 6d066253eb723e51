// Batch-norm front-end: validates every argument (throwing bnorm::Error with a message
// that names the argument and what was expected), maps the problem to the kernels'
// flat view, computes per-channel coefficients in double, and runs the kernels.
// Every check happens before the first write, so a failing call changes nothing.
//
// `op` prefixes every message with the name the caller knows the operation by.
#pragma once

#include <bnorm/bnorm.h>
#include <bnorm/bnorm.hpp>

#include <cstdint>
#include <span>

namespace bnorm::norm {

// The flat problem as the C API states it.
struct Problem {
  bnorm_layout layout;
  int64_t n, c, spatial;
};

// (N, C, *spatial) sizes -> (n, c, spatial), checking rank >= 2, sizes >= 1, no overflow.
Problem problem_from_sizes(const char* op, const char* name, std::span<const int64_t> sizes,
                           Layout layout);

template <class T>
void forward_training(const char* op, const Problem& p, const T* x, T* y, const T* weight,
                      const T* bias, double eps, const bnorm_running_stats_update& update,
                      T* running_mean, T* running_var, T* save_mean, T* save_invstd);

template <class T>
void forward_inference(const char* op, const Problem& p, const T* x, T* y, const T* weight,
                       const T* bias, const T* running_mean, const T* running_var, double eps);

template <class T>
void backward(const char* op, const Problem& p, const T* x, const T* dy, T* dx,
              const T* weight, const T* save_mean, const T* save_invstd, T* dweight,
              T* dbias);

template <class T>
void backward_inference(const char* op, const Problem& p, const T* x, const T* dy, T* dx,
                        const T* weight, const T* running_mean, const T* running_var,
                        double eps, T* dweight, T* dbias);

// Threads every call uses (>= 1).
int num_threads();

}  // namespace bnorm::norm
