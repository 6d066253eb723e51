#include "reference/group_norm_reference.h"

#include <cassert>
#include <cmath>
#include <vector>

namespace bnorm::reference {

namespace {

using Acc = long double;

// The values of instance n, channels [first, first + channels), every spatial position:
// one group of GroupNorm. Walked channel by channel, then spatial, in either layout.
struct Group {
  const Geometry& g;
  int64_t n, first, channels;

  int64_t count() const { return channels * g.spatial; }
  template <class F>
  void for_each(F&& f) const {
    for (int64_t ch = first; ch < first + channels; ++ch)
      for (int64_t s = 0; s < g.spatial; ++s) f(ch, g.index(n, ch, s));
  }
};

// The group's mean and sum of squared deviations M2 (centred second pass).
template <class T>
void group_moments(const Group& grp, const T* x, Acc& mean, Acc& m2) {
  Acc sum = 0;
  grp.for_each([&](int64_t, int64_t k) { sum += x[k]; });
  mean = sum / grp.count();
  m2 = 0;
  grp.for_each([&](int64_t, int64_t k) {
    const Acc d = x[k] - mean;
    m2 += d * d;
  });
}

template <class T>
Acc at_or(const T* v, int64_t ch, Acc fallback) {
  return v ? static_cast<Acc>(v[ch]) : fallback;
}

}  // namespace

template <class T>
void group_norm_forward(const Geometry& g, int64_t groups, const T* x, T* y, const T* weight,
                        const T* bias, double eps, T* mean, T* rstd) {
  assert(groups >= 1 && g.c % groups == 0);
  const int64_t per_group = g.c / groups;
  for (int64_t n = 0; n < g.n; ++n)
    for (int64_t grp = 0; grp < groups; ++grp) {
      const Group group{g, n, grp * per_group, per_group};
      Acc mu = 0, m2 = 0;
      group_moments(group, x, mu, m2);
      const Acc inv = 1 / std::sqrt(m2 / group.count() + eps);
      group.for_each([&](int64_t ch, int64_t k) {
        const Acc xhat = (x[k] - mu) * inv;
        y[k] = static_cast<T>(xhat * at_or(weight, ch, 1) + at_or(bias, ch, 0));
      });
      if (mean) mean[n * groups + grp] = static_cast<T>(mu);
      if (rstd) rstd[n * groups + grp] = static_cast<T>(inv);
    }
}

template <class T>
void group_norm_backward(const Geometry& g, int64_t groups, const T* x, const T* dy,
                         const T* weight, double eps, T* dx, T* dweight, T* dbias) {
  assert(groups >= 1 && g.c % groups == 0);
  const int64_t per_group = g.c / groups;
  // dweight and dbias sum over n and spatial: accumulate everything, round once.
  std::vector<Acc> sum_dy_xhat(dweight ? g.c : 0), sum_dy(dbias ? g.c : 0);
  for (int64_t n = 0; n < g.n; ++n)
    for (int64_t grp = 0; grp < groups; ++grp) {
      const Group group{g, n, grp * per_group, per_group};
      const Acc m = group.count();
      Acc mu = 0, m2 = 0;
      group_moments(group, x, mu, m2);
      const Acc inv = 1 / std::sqrt(m2 / m + eps);
      Acc sum_gy = 0, sum_gy_xhat = 0;
      group.for_each([&](int64_t ch, int64_t k) {
        const Acc xhat = (x[k] - mu) * inv;
        const Acc gy = dy[k] * at_or(weight, ch, 1);
        sum_gy += gy;
        sum_gy_xhat += gy * xhat;
        if (dweight) sum_dy_xhat[ch] += dy[k] * xhat;
        if (dbias) sum_dy[ch] += dy[k];
      });
      if (dx)
        group.for_each([&](int64_t ch, int64_t k) {
          const Acc xhat = (x[k] - mu) * inv;
          const Acc gy = dy[k] * at_or(weight, ch, 1);
          dx[k] = static_cast<T>(inv * (gy - sum_gy / m - xhat * (sum_gy_xhat / m)));
        });
    }
  for (int64_t ch = 0; ch < g.c; ++ch) {
    if (dweight) dweight[ch] = static_cast<T>(sum_dy_xhat[ch]);
    if (dbias) dbias[ch] = static_cast<T>(sum_dy[ch]);
  }
}

template <class T>
void instance_norm_forward_training(const Geometry& g, const T* x, T* y, const T* weight,
                                    const T* bias, double eps, T* mean, T* rstd) {
  group_norm_forward(g, g.c, x, y, weight, bias, eps, mean, rstd);
}

template <class T>
void instance_norm_backward(const Geometry& g, const T* x, const T* dy, const T* weight,
                            double eps, T* dx, T* dweight, T* dbias) {
  group_norm_backward(g, g.c, x, dy, weight, eps, dx, dweight, dbias);
}

template <class T>
void instance_norm_update_running_stats(const Geometry& g, const T* x, double momentum,
                                        T* running_mean, T* running_var) {
  assert(g.spatial >= 2);
  for (int64_t ch = 0; ch < g.c; ++ch) {
    Acc sum_mean = 0, sum_unbiased_var = 0;
    for (int64_t n = 0; n < g.n; ++n) {
      Acc mu = 0, m2 = 0;
      group_moments(Group{g, n, ch, 1}, x, mu, m2);
      sum_mean += mu;
      sum_unbiased_var += m2 / (g.spatial - 1);
    }
    const Acc keep = 1 - static_cast<Acc>(momentum);
    if (running_mean)
      running_mean[ch] = static_cast<T>(keep * running_mean[ch] + momentum * (sum_mean / g.n));
    if (running_var)
      running_var[ch] =
          static_cast<T>(keep * running_var[ch] + momentum * (sum_unbiased_var / g.n));
  }
}

template <class T>
void instance_norm_forward_inference(const Geometry& g, const T* x, T* y, const T* weight,
                                     const T* bias, const T* running_mean,
                                     const T* running_var, double eps) {
  for (int64_t ch = 0; ch < g.c; ++ch) {
    const Acc inv = 1 / std::sqrt(static_cast<Acc>(running_var[ch]) + eps);
    for (int64_t n = 0; n < g.n; ++n)
      for (int64_t s = 0; s < g.spatial; ++s) {
        const int64_t k = g.index(n, ch, s);
        const Acc xhat = (x[k] - static_cast<Acc>(running_mean[ch])) * inv;
        y[k] = static_cast<T>(xhat * at_or(weight, ch, 1) + at_or(bias, ch, 0));
      }
  }
}

template <class T>
void instance_norm_backward_inference(const Geometry& g, const T* x, const T* dy,
                                      const T* weight, const T* running_mean,
                                      const T* running_var, double eps, T* dx, T* dweight,
                                      T* dbias) {
  for (int64_t ch = 0; ch < g.c; ++ch) {
    const Acc inv = 1 / std::sqrt(static_cast<Acc>(running_var[ch]) + eps);
    const Acc w = at_or(weight, ch, 1);
    Acc sum_dy = 0, sum_dy_xhat = 0;
    for (int64_t n = 0; n < g.n; ++n)
      for (int64_t s = 0; s < g.spatial; ++s) {
        const int64_t k = g.index(n, ch, s);
        sum_dy += dy[k];
        sum_dy_xhat += dy[k] * ((x[k] - static_cast<Acc>(running_mean[ch])) * inv);
        if (dx) dx[k] = static_cast<T>(dy[k] * w * inv);
      }
    if (dweight) dweight[ch] = static_cast<T>(sum_dy_xhat);
    if (dbias) dbias[ch] = static_cast<T>(sum_dy);
  }
}

#define BNORM_INSTANTIATE(T)                                                                   \
  template void group_norm_forward<T>(const Geometry&, int64_t, const T*, T*, const T*,        \
                                      const T*, double, T*, T*);                               \
  template void group_norm_backward<T>(const Geometry&, int64_t, const T*, const T*, const T*, \
                                       double, T*, T*, T*);                                    \
  template void instance_norm_forward_training<T>(const Geometry&, const T*, T*, const T*,     \
                                                  const T*, double, T*, T*);                   \
  template void instance_norm_backward<T>(const Geometry&, const T*, const T*, const T*,       \
                                          double, T*, T*, T*);                                 \
  template void instance_norm_update_running_stats<T>(const Geometry&, const T*, double, T*,   \
                                                      T*);                                     \
  template void instance_norm_forward_inference<T>(const Geometry&, const T*, T*, const T*,    \
                                                   const T*, const T*, const T*, double);      \
  template void instance_norm_backward_inference<T>(const Geometry&, const T*, const T*,       \
                                                    const T*, const T*, const T*, double, T*,  \
                                                    T*, T*);
BNORM_INSTANTIATE(float)
BNORM_INSTANTIATE(double)
#undef BNORM_INSTANTIATE

}  // namespace bnorm::reference
