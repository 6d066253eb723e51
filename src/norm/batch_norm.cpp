#include "norm/batch_norm.h"

#include <cmath>
#include <limits>
#include <new>
#include <string>
#include <algorithm>
#include <vector>

#include "kernels/batch_norm.h"
#include "kernels/relu_mask.h"
#include "norm/batch_norm_steps.h"
#include "norm/overlap.h"
#include "norm/threads.h"
#include "norm/validation.h"

namespace bnorm::norm {
namespace {

using kernels::BackwardSums;
using kernels::Geometry;
using kernels::Moments;


void check_training_values(const char* op, const Geometry& g) {
  if (g.per_channel() <= 1)
    fail(BNORM_ERROR_TOO_FEW_VALUES, op,
         "Expected more than 1 value per channel when training, got n = " + str(g.n) +
             " and spatial = " + str(g.spatial) + " (1 value per channel)");
}

// A fused backward reads the ReLU's gate from exactly one place.
template <class T>
void check_gate(const char* op, bool relu_fused, const ReluGate<T>& gate) {
  if (!relu_fused) return;
  if (!gate.y && !gate.mask)
    fail(BNORM_ERROR_NULL_POINTER, op,
         "y and relu_mask are both NULL: give one of them (the fused forward's output or its "
         "ReLU bit mask) to gate dy");
  if (gate.y && gate.mask)
    fail(BNORM_ERROR_INVALID_VALUE, op,
         "y and relu_mask are both given: give exactly one of them to gate dy");
}

// The buffers of a fused ReLU, in bytes: its bit mask.
Buffer relu_mask_buffer(const uint8_t* mask, const Geometry& g, bool written) {
  return Buffer{"relu_mask", mask,
                static_cast<uint64_t>(kernels::relu_mask_bytes(g.n * g.c * g.spatial)), written};
}

struct MomentsTag {};
struct SumsTag {};
struct InvstdTag {};

}  // namespace

// The factor the running statistics move by: momentum, or 1 / (num_batches_tracked + 1).
double check_update(const char* op, const bnorm_running_stats_update& u) {
  if (u.running_var_estimator != BNORM_RUNNING_VAR_UNBIASED &&
      u.running_var_estimator != BNORM_RUNNING_VAR_BIASED)
    fail(BNORM_ERROR_INVALID_VALUE, op,
         "running_var_estimator must be BNORM_RUNNING_VAR_UNBIASED (0) or "
         "BNORM_RUNNING_VAR_BIASED (1), got " + str(static_cast<int>(u.running_var_estimator)));
  if (u.num_batches_tracked && *u.num_batches_tracked < 0)
    fail(BNORM_ERROR_INVALID_VALUE, op,
         "num_batches_tracked must be >= 0, got " + str(*u.num_batches_tracked));
  if (u.num_batches_tracked && *u.num_batches_tracked == std::numeric_limits<int64_t>::max())
    fail(BNORM_ERROR_INVALID_VALUE, op,
         "num_batches_tracked is INT64_MAX: counting this batch would overflow it");
  if (u.momentum == BNORM_MOMENTUM_CUMULATIVE) {
    if (!u.num_batches_tracked)
      fail(BNORM_ERROR_NULL_POINTER, op,
           "num_batches_tracked must not be NULL when momentum is BNORM_MOMENTUM_CUMULATIVE "
           "(the cumulative average counts batches)");
    return 1.0 / (static_cast<double>(*u.num_batches_tracked) + 1.0);
  }
  if (!(u.momentum >= 0 && u.momentum <= 1))
    fail(BNORM_ERROR_INVALID_VALUE, op,
         "momentum must be in [0, 1] (or BNORM_MOMENTUM_CUMULATIVE), got " + str(u.momentum));
  return u.momentum;
}

kernels::Geometry check_problem(const char* op, const Problem& p) {
  if (p.layout != BNORM_CHANNELS_FIRST && p.layout != BNORM_CHANNELS_LAST)
    fail(BNORM_ERROR_INVALID_SHAPE, op,
         "layout must be BNORM_CHANNELS_FIRST (0) or BNORM_CHANNELS_LAST (1), got " +
             str(static_cast<int>(p.layout)));
  const std::pair<const char*, int64_t> sizes[] = {{"n", p.n}, {"c", p.c}, {"spatial", p.spatial}};
  for (const auto& [name, value] : sizes)
    if (value < 1)
      fail(BNORM_ERROR_INVALID_SHAPE, op,
           std::string(name) + " must be >= 1 (no zero-size dims), got " + str(value));
  int64_t total = 0;
  if (__builtin_mul_overflow(p.n, p.c, &total) || __builtin_mul_overflow(total, p.spatial, &total))
    fail(BNORM_ERROR_SIZE_OVERFLOW, op,
         "n * c * spatial = " + str(p.n) + " * " + str(p.c) + " * " + str(p.spatial) +
             " overflows int64_t");
  return Geometry{p.n, p.c, p.spatial, p.layout == BNORM_CHANNELS_LAST};
}

Problem problem_from_sizes(const char* op, const char* name, std::span<const int64_t> sizes,
                           Layout layout) {
  if (sizes.size() < 2)
    fail(BNORM_ERROR_INVALID_SHAPE, op,
         std::string(name) + " must have rank >= 2 (N, C, *spatial), got rank " + str(sizes.size()));
  for (size_t d = 0; d < sizes.size(); ++d)
    if (sizes[d] < 1)
      fail(BNORM_ERROR_INVALID_SHAPE, op,
           std::string(name) + " size " + str(sizes[d]) + " at dim " + str(d) +
               " must be >= 1 (no zero-size dims)");
  int64_t spatial = 1;
  for (size_t d = 2; d < sizes.size(); ++d)
    if (__builtin_mul_overflow(spatial, sizes[d], &spatial))
      fail(BNORM_ERROR_SIZE_OVERFLOW, op, std::string(name) + " has more values than int64_t counts");
  return Problem{static_cast<bnorm_layout>(layout), sizes[0], sizes[1], spatial};
}

// ---- forward ------------------------------------------------------------------------

template <class T>
void forward_training(const char* op, const Problem& p, const T* x, T* y, const T* weight,
                      const T* bias, double eps, const bnorm_running_stats_update& update,
                      T* running_mean, T* running_var, T* save_mean, T* save_invstd,
                      const ReluOutput& relu) {
  require(x, op, "x");
  require(y, op, "y");
  const Geometry g = check_problem(op, p);
  check_training_values(op, g);
  check_eps(op, eps);
  const double factor = check_update(op, update);

  Coefficients<T> coeff(g.c, 4);
  Moments* moments = scratch<MomentsTag, Moments>(static_cast<size_t>(g.c));
  // The aliasing rule (overlap.h), before the first write; after the scratch is sized, so
  // that sizes no buffer can have report running out of memory, not an overlap.
  const int64_t count = g.n * g.c * g.spatial;
  check_no_overlap(op,
                   {buffer_of("x", x, count, false), buffer_of("y", y, count, true),
                    buffer_of("weight", weight, g.c, false), buffer_of("bias", bias, g.c, false),
                    buffer_of("running_mean", running_mean, g.c, true),
                    buffer_of("running_var", running_var, g.c, true),
                    buffer_of("save_mean", save_mean, g.c, true),
                    buffer_of("save_invstd", save_invstd, g.c, true),
                    relu_mask_buffer(relu.mask, g, true),
                    buffer_of("num_batches_tracked", update.num_batches_tracked, 1, true)},
                   "y", "x");
  TrainingAffine<T> affine{weight,          bias,           eps,
                           coeff.array(g.c, 0), coeff.array(g.c, 1), coeff.array(g.c, 2),
                           coeff.array(g.c, 3), save_mean,      save_invstd};
  const int threads = num_threads();
  if (!kernels::batch_norm_forward_fused(g, x, y, moments, {&affine, &TrainingAffine<T>::call},
                                         threads, relu)) {
    kernels::batch_norm_moments(g, x, moments, threads);
    for (int64_t ch = 0; ch < g.c; ++ch) affine(ch, moments[ch]);
    kernels::batch_norm_apply(
        g, x, y, kernels::ChannelAffine<T>{affine.hi, affine.lo, affine.scale, affine.shift},
        threads, {}, relu);
  }

  update_running_stats(moments, g.c, factor, update.running_var_estimator, running_mean,
                       running_var);
  if (update.num_batches_tracked) ++*update.num_batches_tracked;
}

template <class T>
void forward_inference(const char* op, const Problem& p, const T* x, T* y, const T* weight,
                       const T* bias, const T* running_mean, const T* running_var, double eps,
                       const ReluOutput& relu) {
  require(x, op, "x");
  require(y, op, "y");
  require(running_mean, op, "running_mean");
  require(running_var, op, "running_var");
  const Geometry g = check_problem(op, p);
  check_eps(op, eps);

  // y = ((x - running_mean) - 0) * (weight / sqrt(running_var + eps)) + bias
  Coefficients<T> coeff(g.c, 3);
  T* lo = coeff.array(g.c, 0);
  T* scale = coeff.array(g.c, 1);
  T* shift = coeff.array(g.c, 2);
  // The aliasing rule (overlap.h), before the first write.
  const int64_t count = g.n * g.c * g.spatial;
  check_no_overlap(op,
                   {buffer_of("x", x, count, false), buffer_of("y", y, count, true),
                    buffer_of("weight", weight, g.c, false), buffer_of("bias", bias, g.c, false),
                    buffer_of("running_mean", running_mean, g.c, false),
                    buffer_of("running_var", running_var, g.c, false),
                    relu_mask_buffer(relu.mask, g, true)},
                   "y", "x");
  for (int64_t ch = 0; ch < g.c; ++ch) {
    lo[ch] = 0;
    scale[ch] = static_cast<T>(value_or(weight, ch, 1.0) /
                               std::sqrt(static_cast<double>(running_var[ch]) + eps));
    shift[ch] = static_cast<T>(value_or(bias, ch, 0.0));
  }
  kernels::batch_norm_apply(g, x, y, kernels::ChannelAffine<T>{running_mean, lo, scale, shift},
                            num_threads(), {}, relu);
}

// ---- backward -----------------------------------------------------------------------

template <class T>
void backward(const char* op, const Problem& p, const T* x, const T* dy, T* dx,
              const T* weight, const T* save_mean, const T* save_invstd, T* dweight,
              T* dbias, bool relu_fused, const ReluGate<T>& gate) {
  require(x, op, "x");
  require(dy, op, "dy");
  require(save_mean, op, "save_mean");
  require(save_invstd, op, "save_invstd");
  check_gate(op, relu_fused, gate);
  const Geometry g = check_problem(op, p);
  if (!dx && !dweight && !dbias) return;

  Coefficients<T> coeff(g.c, 4);
  BackwardSums* sums = scratch<SumsTag, BackwardSums>(static_cast<size_t>(g.c));
  // The aliasing rule (overlap.h), before the first write.
  const int64_t count = g.n * g.c * g.spatial;
  check_no_overlap(op,
                   {buffer_of("x", x, count, false), buffer_of("dy", dy, count, false),
                    buffer_of("dx", dx, count, true), buffer_of("weight", weight, g.c, false),
                    buffer_of("save_mean", save_mean, g.c, false),
                    buffer_of("save_invstd", save_invstd, g.c, false),
                    buffer_of("dweight", dweight, g.c, true), buffer_of("dbias", dbias, g.c, true),
                    buffer_of("y", gate.y, count, false), relu_mask_buffer(gate.mask, g, false)},
                   "dx", "dy");
  BackwardAffineMaker<T> affine{static_cast<double>(g.per_channel()),
                                weight,
                                save_mean,
                                save_invstd,
                                coeff.array(g.c, 0),
                                coeff.array(g.c, 1),
                                coeff.array(g.c, 2),
                                coeff.array(g.c, 3),
                                dweight,
                                dbias};
  const int threads = num_threads();
  if (kernels::batch_norm_backward_fused(g, x, dy, dx, save_mean, sums,
                                         {&affine, &BackwardAffineMaker<T>::call}, threads,
                                         gate))
    return;
  kernels::batch_norm_backward_sums(g, x, dy, save_mean, sums, threads, gate);
  for (int64_t ch = 0; ch < g.c; ++ch) affine(ch, sums[ch]);
  if (dx)
    kernels::batch_norm_backward_apply(
        g, x, dy, dx,
        kernels::BackwardAffine<T>{save_mean, affine.lo, affine.k, affine.q, affine.r},
        threads, gate);
}

template <class T>
void backward_inference(const char* op, const Problem& p, const T* x, const T* dy, T* dx,
                        const T* weight, const T* running_mean, const T* running_var,
                        double eps, T* dweight, T* dbias, bool relu_fused,
                        const ReluGate<T>& gate) {
  require(x, op, "x");
  require(dy, op, "dy");
  require(running_mean, op, "running_mean");
  require(running_var, op, "running_var");
  check_gate(op, relu_fused, gate);
  const Geometry g = check_problem(op, p);
  check_eps(op, eps);
  if (!dx && !dweight && !dbias) return;

  // dx = gate(dy) * (weight * invstd), run as the affine map ((gate(dy) - 0) - 0) * k + 0.
  Coefficients<T> coeff(g.c, 2);
  T* zero = coeff.array(g.c, 0);
  T* k = coeff.array(g.c, 1);
  double* invstd = scratch<InvstdTag, double>(static_cast<size_t>(g.c));
  // The aliasing rule (overlap.h), before the first write.
  const int64_t count = g.n * g.c * g.spatial;
  check_no_overlap(op,
                   {buffer_of("x", x, count, false), buffer_of("dy", dy, count, false),
                    buffer_of("dx", dx, count, true), buffer_of("weight", weight, g.c, false),
                    buffer_of("running_mean", running_mean, g.c, false),
                    buffer_of("running_var", running_var, g.c, false),
                    buffer_of("dweight", dweight, g.c, true), buffer_of("dbias", dbias, g.c, true),
                    buffer_of("y", gate.y, count, false), relu_mask_buffer(gate.mask, g, false)},
                   "dx", "dy");
  for (int64_t ch = 0; ch < g.c; ++ch) {
    invstd[ch] = 1.0 / std::sqrt(static_cast<double>(running_var[ch]) + eps);
    zero[ch] = 0;
    k[ch] = static_cast<T>(value_or(weight, ch, 1.0) * invstd[ch]);
  }
  BackwardSums* sums = nullptr;
  if (dweight || dbias) {
    sums = scratch<SumsTag, BackwardSums>(static_cast<size_t>(g.c));
    kernels::batch_norm_backward_sums(g, x, dy, running_mean, sums, num_threads(), gate);
  }
  if (dx)
    kernels::batch_norm_apply(g, dy, dx, kernels::ChannelAffine<T>{zero, zero, k, zero},
                              num_threads(), gate);
  for (int64_t ch = 0; ch < g.c && sums; ++ch) {
    if (dweight) dweight[ch] = static_cast<T>(sums[ch].dy_xc_sum * invstd[ch]);
    if (dbias) dbias[ch] = static_cast<T>(sums[ch].dy_sum);
  }
}

#define BNORM_INSTANTIATE(T)                                                                \
  template void forward_training<T>(const char*, const Problem&, const T*, T*, const T*,    \
                                    const T*, double, const bnorm_running_stats_update&,    \
                                    T*, T*, T*, T*, const ReluOutput&);                     \
  template void forward_inference<T>(const char*, const Problem&, const T*, T*, const T*,   \
                                     const T*, const T*, const T*, double,                  \
                                     const ReluOutput&);                                    \
  template void backward<T>(const char*, const Problem&, const T*, const T*, T*, const T*,  \
                            const T*, const T*, T*, T*, bool, const ReluGate<T>&);          \
  template void backward_inference<T>(const char*, const Problem&, const T*, const T*, T*,  \
                                      const T*, const T*, const T*, double, T*, T*, bool,   \
                                      const ReluGate<T>&);
BNORM_INSTANTIATE(float)
BNORM_INSTANTIATE(double)
#undef BNORM_INSTANTIATE

}  // namespace bnorm::norm
