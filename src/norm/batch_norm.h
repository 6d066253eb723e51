// Batch-norm front-end: validates every argument (throwing bnorm::Error with a message
// that names the argument and what was expected), maps the problem to the kernels'
// flat view, computes per-channel coefficients in double, and runs the kernels.
// Every check happens before the first write, so a failing call changes nothing.
//
// `op` prefixes every message with the name the caller knows the operation by.
#pragma once

#include <bnorm/bnorm.h>
#include <bnorm/error.hpp>

#include <cstdint>
#include <span>

#include "kernels/batch_norm.h"

namespace bnorm::norm {

// The flat problem as the C API states it.
struct Problem {
  bnorm_layout layout;
  int64_t n, c, spatial;
};

// (N, C, *spatial) sizes -> (n, c, spatial), checking rank >= 2, sizes >= 1, no overflow.
Problem problem_from_sizes(const char* op, const char* name, std::span<const int64_t> sizes,
                           Layout layout);

// The kernels' view of a problem, after checking the layout, sizes >= 1 and that
// n * c * spatial fits in int64_t (every front-end with (N, C, *) input uses it).
kernels::Geometry check_problem(const char* op, const Problem& p);

// Fused BN+ReLU (kernels::ReluOutput, kernels::ReluGate): the forwards write
// max(bn(x), 0) and, when relu.mask is not null, its bit mask; the backwards take dy as
// the gradient of that output, gated by the forward's output or its mask. A fused
// backward (`relu_fused`) needs exactly one of gate.y and gate.mask.
using kernels::ReluGate;
using kernels::ReluOutput;

template <class T>
void forward_training(const char* op, const Problem& p, const T* x, T* y, const T* weight,
                      const T* bias, double eps, const bnorm_running_stats_update& update,
                      T* running_mean, T* running_var, T* save_mean, T* save_invstd,
                      const ReluOutput& relu = {});

template <class T>
void forward_inference(const char* op, const Problem& p, const T* x, T* y, const T* weight,
                       const T* bias, const T* running_mean, const T* running_var, double eps,
                       const ReluOutput& relu = {});

template <class T>
void backward(const char* op, const Problem& p, const T* x, const T* dy, T* dx,
              const T* weight, const T* save_mean, const T* save_invstd, T* dweight,
              T* dbias, bool relu_fused = false, const ReluGate<T>& gate = {});

template <class T>
void backward_inference(const char* op, const Problem& p, const T* x, const T* dy, T* dx,
                        const T* weight, const T* running_mean, const T* running_var,
                        double eps, T* dweight, T* dbias, bool relu_fused = false,
                        const ReluGate<T>& gate = {});

}  // namespace bnorm::norm
