// Group norm and instance norm front-end: validates every argument (bnorm::Error naming
// it), computes each group's maps in double, and runs kernels/group_norm.h. Every check
// happens before the first write, so a failing call changes nothing.
//
// x is (N, C, *spatial) in either layout (Problem, as batch norm); G groups divide C;
// statistics per (n, g) over C/G channels x spatial values, biased variance;
// weight and bias per channel (null: 1 and 0); save_mean and save_rstd hold N * G
// values at n * G + g (null: not saved). Instance norm is G = C.
// Formulas: docs/normalizations.md.
#pragma once

#include <cstdint>

#include "norm/batch_norm.h"

namespace bnorm::norm {

template <class T>
void group_norm_forward(const char* op, const Problem& p, int64_t groups, const T* x, T* y,
                        const T* weight, const T* bias, double eps, T* save_mean,
                        T* save_rstd);

// dx, dweight, dbias: null means not computed. dx may equal dy.
template <class T>
void group_norm_backward(const char* op, const Problem& p, int64_t groups, const T* x,
                         const T* dy, T* dx, const T* weight, const T* save_mean,
                         const T* save_rstd, T* dweight, T* dbias);

// Instance norm in training (use_input_stats): group norm with G = C, and, when
// running_mean / running_var are not null, PyTorch's update of them:
//   running_mean = (1 - momentum) * running_mean + momentum * mean_n(mean of (n, c))
//   running_var  = (1 - momentum) * running_var + momentum * mean_n(unbiased var of (n, c))
// Needs spatial > 1 (PyTorch: more than one spatial element when training).
template <class T>
void instance_norm_forward_training(const char* op, const Problem& p, const T* x, T* y,
                                    const T* weight, const T* bias, double eps,
                                    double momentum, T* running_mean, T* running_var,
                                    T* save_mean, T* save_rstd);

// (Instance norm with running statistics, use_input_stats = false, is batch norm's
// forward_inference and backward_inference: a per-channel map with fixed statistics.)

}  // namespace bnorm::norm
