#include "norm/group_norm.h"

#include <cmath>
#include <limits>
#include <new>
#include <string>

#include "kernels/group_norm.h"
#include "norm/overlap.h"
#include "norm/threads.h"
#include "norm/validation.h"

namespace bnorm::norm {
namespace {

using kernels::BackwardSums;
using kernels::Geometry;
using kernels::Moments;

struct GroupsChecked {
  Geometry g;
  int64_t groups;
  int64_t per_group;  // channels per group
};

GroupsChecked check_groups(const char* op, const Problem& p, int64_t groups) {
  const Geometry g = check_problem(op, p);
  if (groups < 1)
    fail(BNORM_ERROR_INVALID_VALUE, op, "groups must be >= 1, got " + str(groups));
  if (g.c % groups != 0)
    fail(BNORM_ERROR_INVALID_VALUE, op,
         "groups must divide the channels: c = " + str(g.c) + " is not divisible by groups = " +
             str(groups));
  return GroupsChecked{g, groups, g.c / groups};
}

// Arrays of n * c (per (sample, channel)) or n * groups values, from per-thread scratch
// that only grows; an impossible count is std::bad_alloc (BNORM_ERROR_OUT_OF_MEMORY).
size_t checked_count(int64_t count, int arrays) {
  if (count > std::numeric_limits<int64_t>::max() / 64 / arrays) throw std::bad_alloc();
  return static_cast<size_t>(count * arrays);
}

template <class T>
struct ForwardMapsTag {};
template <class T>
struct BackwardMapsTag {};
struct GroupMomentsTag {};
struct SliceSumsTag {};
struct DeltaTag {};

// Per group (n, g), from its moments (mean, biased variance) to the map of each of its
// channels c = g * C/G + j:
//   y = ((x - mean_hi) - mean_lo) * (weight[c] * rstd) + bias[c],  rstd = 1 / sqrt(var + eps)
// with mean = mean_hi + mean_lo in two values of T (affine.h: no digit of x - mean lost).
template <class T>
struct GroupForward {
  int64_t c, groups, per_group;
  const T* weight;
  const T* bias;
  double eps;
  T *hi, *lo, *scale, *shift;
  T *save_mean, *save_rstd;

  void operator()(int64_t k, const Moments& m) const {
    const double rstd = 1.0 / std::sqrt(m.biased_variance() + eps);
    const T mean_hi = static_cast<T>(m.mean);
    const T mean_lo = static_cast<T>(m.mean - static_cast<double>(mean_hi));
    const int64_t n = k / groups, c0 = k % groups * per_group;
    for (int64_t ch = c0; ch < c0 + per_group; ++ch) {
      const int64_t at = n * c + ch;
      hi[at] = mean_hi;
      lo[at] = mean_lo;
      scale[at] = static_cast<T>(value_or(weight, ch, 1.0) * rstd);
      shift[at] = static_cast<T>(value_or(bias, ch, 0.0));
    }
    if (save_mean) save_mean[k] = mean_hi;
    if (save_rstd) save_rstd[k] = static_cast<T>(rstd);
  }
  static void call(void* self, int64_t k, const Moments& m) {
    (*static_cast<const GroupForward*>(self))(k, m);
  }
};

// Per group (n, g) of M = C/G * spatial values, from its channels' sums (xc = x -
// save_mean) to each channel's dx map. With the exact group mean = save_mean + delta,
// delta = sum(xc) / M, P_c = sum_c(dy * (x - mean)) = sum(dy * xc) - delta * sum(dy),
// A = sum_c w_c * sum_c(dy), B = sum_c w_c * P_c (sums over the group's channels):
//   dx = rstd * (w_c * dy - A / M - (x - mean) * rstd^2 * B / M)
//      = dy * (w_c * rstd) + ((x - save_mean) - delta) * (-rstd^3 * B / M) + (-rstd * A / M)
template <class T>
struct GroupBackward {
  int64_t c, groups, per_group;
  double m;  // values per group
  const T* weight;
  const T* save_mean;
  const T* save_rstd;
  const T* hi;  // the centers, save_mean per (n, c), filled before the sums run
  T *lo, *k, *q, *r;
  double* delta;  // per group, for dweight

  void operator()(int64_t group, const BackwardSums* s) const {
    const int64_t n = group / groups, c0 = group % groups * per_group;
    double xc_sum = 0;
    for (int64_t j = 0; j < per_group; ++j) xc_sum += s[j].xc_sum;
    const double d = xc_sum / m;
    double a = 0, b = 0;
    for (int64_t j = 0; j < per_group; ++j) {
      const double w = value_or(weight, c0 + j, 1.0);
      a += w * s[j].dy_sum;
      b += w * (s[j].dy_xc_sum - d * s[j].dy_sum);
    }
    const double rstd = static_cast<double>(save_rstd[group]);
    const T q_group = static_cast<T>(-rstd * rstd * rstd * (b / m));
    const T r_group = static_cast<T>(-rstd * (a / m));
    for (int64_t j = 0; j < per_group; ++j) {
      const int64_t at = n * c + c0 + j;
      lo[at] = static_cast<T>(d);  // hi[at] is the group's save_mean, set by the caller
      k[at] = static_cast<T>(value_or(weight, c0 + j, 1.0) * rstd);
      q[at] = q_group;
      r[at] = r_group;
    }
    delta[group] = d;
  }
  static void call(void* self, int64_t group, const BackwardSums* s) {
    (*static_cast<const GroupBackward*>(self))(group, s);
  }
};

}  // namespace

namespace {

// group_norm_forward, returning the groups' moments (this thread's scratch, valid until
// its next call): instance norm's running statistics are made from them.
template <class T>
const Moments* run_group_norm_forward(const char* op, const Problem& p, int64_t groups,
                                      const T* x, T* y, const T* weight, const T* bias,
                                      double eps, T* save_mean, T* save_rstd) {
  require(x, op, "x");
  require(y, op, "y");
  const GroupsChecked gc = check_groups(op, p, groups);
  const Geometry& g = gc.g;
  if (gc.per_group * g.spatial == 1)
    fail(BNORM_ERROR_TOO_FEW_VALUES, op,
         "Expected more than 1 value per group, got c / groups = " + str(gc.per_group) +
             " channels of spatial = " + str(g.spatial) + " (1 value per group)");
  check_positive_eps(op, eps);

  const int64_t slices = checked_product(op, "n * c", {g.n, g.c});
  const int64_t group_count = checked_product(op, "n * groups", {g.n, groups});
  T* maps = scratch<ForwardMapsTag<T>, T>(checked_count(slices, 4));
  Moments* moments = scratch<GroupMomentsTag, Moments>(checked_count(group_count, 1));
  const int64_t count = g.values();
  check_no_overlap(op,
                   {buffer_of("x", x, count, false), buffer_of("y", y, count, true),
                    buffer_of("weight", weight, g.c, false), buffer_of("bias", bias, g.c, false),
                    buffer_of("save_mean", save_mean, group_count, true),
                    buffer_of("save_rstd", save_rstd, group_count, true)},
                   "y", "x");
  GroupForward<T> fn{g.c,        groups,       gc.per_group,     weight,
                     bias,       eps,          maps,             maps + slices,
                     maps + 2 * slices, maps + 3 * slices, save_mean, save_rstd};
  kernels::group_norm_forward(g, groups, x, y, moments,
                              kernels::ChannelAffine<T>{fn.hi, fn.lo, fn.scale, fn.shift},
                              kernels::GroupForwardFn{&fn, &GroupForward<T>::call},
                              num_threads());
  return moments;
}

}  // namespace

template <class T>
void group_norm_forward(const char* op, const Problem& p, int64_t groups, const T* x, T* y,
                        const T* weight, const T* bias, double eps, T* save_mean,
                        T* save_rstd) {
  run_group_norm_forward(op, p, groups, x, y, weight, bias, eps, save_mean, save_rstd);
}

template <class T>
void group_norm_backward(const char* op, const Problem& p, int64_t groups, const T* x,
                         const T* dy, T* dx, const T* weight, const T* save_mean,
                         const T* save_rstd, T* dweight, T* dbias) {
  require(x, op, "x");
  require(dy, op, "dy");
  require(save_mean, op, "save_mean");
  require(save_rstd, op, "save_rstd");
  const GroupsChecked gc = check_groups(op, p, groups);
  const Geometry& g = gc.g;
  if (!dx && !dweight && !dbias) return;

  const int64_t slices = checked_product(op, "n * c", {g.n, g.c});
  const int64_t group_count = checked_product(op, "n * groups", {g.n, groups});
  T* maps = scratch<BackwardMapsTag<T>, T>(checked_count(slices, 5));
  BackwardSums* sums = scratch<SliceSumsTag, BackwardSums>(checked_count(slices, 1));
  double* delta = scratch<DeltaTag, double>(checked_count(group_count, 1));
  const int64_t count = g.values();
  check_no_overlap(op,
                   {buffer_of("x", x, count, false), buffer_of("dy", dy, count, false),
                    buffer_of("dx", dx, count, true), buffer_of("weight", weight, g.c, false),
                    buffer_of("save_mean", save_mean, group_count, false),
                    buffer_of("save_rstd", save_rstd, group_count, false),
                    buffer_of("dweight", dweight, g.c, true), buffer_of("dbias", dbias, g.c, true)},
                   "dx", "dy");
  GroupBackward<T> fn{g.c,          groups,           gc.per_group,
                      static_cast<double>(gc.per_group * g.spatial),
                      weight,       save_mean,        save_rstd,
                      maps + 4 * slices, maps,        maps + slices,
                      maps + 2 * slices, maps + 3 * slices, delta};
  // The centers: each (n, c) slice is centred on its group's saved mean.
  T* center = maps + 4 * slices;
  for (int64_t s = 0; s < slices; ++s) center[s] = save_mean[s / g.c * groups + s % g.c / gc.per_group];
  kernels::group_norm_backward(g, groups, x, dy, dx, fn.hi, sums,
                               kernels::BackwardAffine<T>{fn.hi, fn.lo, fn.k, fn.q, fn.r},
                               kernels::GroupBackwardFn{&fn, &GroupBackward<T>::call},
                               num_threads());
  // dweight[c] = sum_n rstd(n, g) * P(n, c), dbias[c] = sum_n sum(dy) of (n, c), in n order.
  for (int64_t ch = 0; ch < g.c && (dweight || dbias); ++ch) {
    double dw = 0, db = 0;
    for (int64_t n = 0; n < g.n; ++n) {
      const int64_t k = n * groups + ch / gc.per_group;
      const BackwardSums& s = sums[n * g.c + ch];
      dw += static_cast<double>(save_rstd[k]) * (s.dy_xc_sum - delta[k] * s.dy_sum);
      db += s.dy_sum;
    }
    if (dweight) dweight[ch] = static_cast<T>(dw);
    if (dbias) dbias[ch] = static_cast<T>(db);
  }
}

template <class T>
void instance_norm_forward_training(const char* op, const Problem& p, const T* x, T* y,
                                    const T* weight, const T* bias, double eps,
                                    double momentum, T* running_mean, T* running_var,
                                    T* save_mean, T* save_rstd) {
  require(x, op, "x");
  require(y, op, "y");
  const Geometry g = check_problem(op, p);
  if (g.spatial <= 1)
    fail(BNORM_ERROR_TOO_FEW_VALUES, op,
         "Expected more than 1 spatial element when training, got spatial = " + str(g.spatial));
  if (!(momentum >= 0 && momentum <= 1))
    fail(BNORM_ERROR_INVALID_VALUE, op, "momentum must be in [0, 1], got " + str(momentum));
  check_positive_eps(op, eps);
  const int64_t count = g.values();
  const int64_t slices = checked_product(op, "n * c", {g.n, g.c});
  // Checked here as well as by group_norm_forward, with the running statistics, so that
  // nothing is written when one of them overlaps.
  check_no_overlap(op,
                   {buffer_of("x", x, count, false), buffer_of("y", y, count, true),
                    buffer_of("weight", weight, g.c, false), buffer_of("bias", bias, g.c, false),
                    buffer_of("running_mean", running_mean, g.c, true),
                    buffer_of("running_var", running_var, g.c, true),
                    buffer_of("save_mean", save_mean, slices, true),
                    buffer_of("save_rstd", save_rstd, slices, true)},
                   "y", "x");
  // Groups of one channel: group (n, c) is at n * C + c.
  const Moments* moments =
      run_group_norm_forward(op, p, g.c, x, y, weight, bias, eps, save_mean, save_rstd);
  const double spatial = static_cast<double>(g.spatial);
  for (int64_t ch = 0; ch < g.c && (running_mean || running_var); ++ch) {
    double mean = 0, var = 0;
    for (int64_t n = 0; n < g.n; ++n) {
      mean += moments[n * g.c + ch].mean;
      var += moments[n * g.c + ch].m2 / (spatial - 1);
    }
    mean /= static_cast<double>(g.n);
    var /= static_cast<double>(g.n);
    if (running_mean)
      running_mean[ch] = static_cast<T>((1 - momentum) * static_cast<double>(running_mean[ch]) +
                                        momentum * mean);
    if (running_var)
      running_var[ch] = static_cast<T>((1 - momentum) * static_cast<double>(running_var[ch]) +
                                       momentum * var);
  }
}

#define BNORM_INSTANTIATE(T)                                                                  \
  template void group_norm_forward<T>(const char*, const Problem&, int64_t, const T*, T*,     \
                                      const T*, const T*, double, T*, T*);                    \
  template void group_norm_backward<T>(const char*, const Problem&, int64_t, const T*,        \
                                       const T*, T*, const T*, const T*, const T*, T*, T*);   \
  template void instance_norm_forward_training<T>(const char*, const Problem&, const T*, T*,  \
                                                  const T*, const T*, double, double, T*, T*, \
                                                  T*, T*);
BNORM_INSTANTIATE(float)
BNORM_INSTANTIATE(double)
#undef BNORM_INSTANTIATE

}  // namespace bnorm::norm
