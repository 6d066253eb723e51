// Group norm's kernel driver (group_norm.h): the batch-norm microkernels on group views.
#include "kernels/group_norm.h"

#include <algorithm>
#include <cassert>

#include "kernels/batch_norm.h"
#include "kernels/policy.h"
#include "kernels/reduce.h"
#include "kernels/work_split.h"

namespace bnorm::kernels {
namespace {

// The views of a channels-first problem: groups as channels, and (n, c) slices as
// channels, both of one sample.
struct GroupViews {
  int64_t groups_total;  // N * G
  int64_t per_group;     // C / G channels
  Geometry groups;       // {1, N * G, C/G * S}
  Geometry slices;       // {1, N * C, S}
};

GroupViews views_of(const Geometry& g, int64_t groups) {
  const int64_t per_group = g.c / groups;
  return GroupViews{g.n * groups, per_group, Geometry{1, g.n * groups, per_group * g.spatial, false},
                    Geometry{1, g.n * g.c, g.spatial, false}};
}

// Fused, group by group? Only with more than one value per reduction run (a view with
// spatial 1 reduces as rows of channels, with other bits), and when whole groups keep
// the threads busy (items_fill_threads, policy.h).
bool fused_groups(int64_t groups_total, int64_t run, int nt) {
  return run > 1 && items_fill_threads(groups_total, nt);
}

template <class T>
ApplyOptions<T> plain_options(const Geometry& g) {
  const int64_t count = g.values();
  return ApplyOptions<T>{{}, {}, count, use_streaming_stores(count * int64_t{sizeof(T)})};
}

// ---- channels-first ---------------------------------------------------------------

template <class T>
void forward_channels_first(const Geometry& g, int64_t groups, const T* x, T* y,
                            Moments* moments, const ChannelAffine<T>& maps,
                            const GroupForwardFn& fn, int nt) {
  const GroupViews v = views_of(g, groups);
  const ApplyOptions<T> o = plain_options<T>(g);
  if (!fused_groups(v.groups_total, v.groups.spatial, nt)) {
    batch_norm_moments(v.groups, x, moments, nt);
    for (int64_t k = 0; k < v.groups_total; ++k) fn.call(fn.context, k, moments[k]);
    batch_norm_apply(v.slices, x, y, maps, nt);
    return;
  }
  const ChannelsFirstChunks plan(v.groups);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (int64_t k = 0; k < v.groups_total; ++k) {
    const T* xg = x + k * v.groups.spatial;
    Moments total{};  // the fold of batch_norm_moments, chunk by chunk
    for (int64_t j = 0; j < plan.count; ++j)
      total = merge(total, moments_chunk(xg, plan, j, finite_shift(static_cast<double>(xg[0]))));
    moments[k] = total;
    fn.call(fn.context, k, total);
    // The group's slices, last first: its end is what the cache still holds.
    affine_slices(x, y, v.slices, SliceWalk{k * v.per_group, v.per_group, 1, true}, &maps,
                  AffineCoefficients<T>{}, o);
  }
}

template <class T>
void backward_channels_first(const Geometry& g, int64_t groups, const T* x, const T* dy, T* dx,
                             const T* center, BackwardSums* sums, const BackwardAffine<T>& maps,
                             const GroupBackwardFn& fn, int nt) {
  const GroupViews v = views_of(g, groups);
  const ApplyOptions<T> o = plain_options<T>(g);
  if (!fused_groups(v.groups_total, g.spatial, nt)) {
    batch_norm_backward_sums(v.slices, x, dy, center, sums, nt);
    for (int64_t k = 0; k < v.groups_total; ++k) fn.call(fn.context, k, sums + k * v.per_group);
    if (dx) batch_norm_backward_apply(v.slices, x, dy, dx, maps, nt);
    return;
  }
  const ChannelsFirstChunks plan(v.slices);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (int64_t k = 0; k < v.groups_total; ++k) {
    const int64_t s0 = k * v.per_group;
    if (plan.count == 1) {
      // One chunk per slice: the group's slices in one call (the same bits).
      backward_sums_slices(x + s0 * g.spatial, dy + s0 * g.spatial, g.spatial, v.per_group,
                           center + s0, k + 1 < v.groups_total, sums + s0);
    } else {
      for (int64_t s = s0; s < s0 + v.per_group; ++s) {
        BackwardSums total{};  // the fold of batch_norm_backward_sums, chunk by chunk
        for (int64_t j = 0; j < plan.count; ++j)
          total = add_sums(total, backward_sums_chunk(x + s * g.spatial, dy + s * g.spatial,
                                                      plan, j, static_cast<double>(center[s]),
                                                      ReluGate<T>{}, s * g.spatial));
        sums[s] = total;
      }
    }
    fn.call(fn.context, k, sums + k * v.per_group);
    if (dx)
      backward_affine_slices(x, dy, dx, v.slices, SliceWalk{k * v.per_group, v.per_group, 1, true},
                             &maps, BackwardCoefficients<T>{}, o);
  }
}

// ---- channels-last ----------------------------------------------------------------

// Elementwise over the samples' rows of channels: rows_fn(n, r0, r1) for items of about
// kApplyPiece values within one sample.
template <class RowsFn>
void for_each_sample_row_block(const Geometry& g, int nt, RowsFn&& rows_fn) {
  const int64_t rows_per_item = std::max<int64_t>(1, kApplyPiece / g.c);
  const int64_t per_sample = ceil_div(g.spatial, rows_per_item);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (int64_t item = 0; item < g.n * per_sample; ++item) {
    const int64_t n = item / per_sample, r0 = item % per_sample * rows_per_item;
    rows_fn(n, r0, std::min(g.spatial, r0 + rows_per_item));
  }
}

// The maps of sample n: the arrays from n * C.
template <class T>
ChannelAffine<T> sample_maps(const ChannelAffine<T>& m, int64_t at) {
  return {m.center_hi + at, m.center_lo + at, m.scale + at, m.shift + at};
}
template <class T>
BackwardAffine<T> sample_maps(const BackwardAffine<T>& m, int64_t at) {
  return {m.center_hi + at, m.center_lo + at, m.k + at, m.q + at, m.r + at};
}

// Group (n, gr)'s moments from its channels' row-chunk partials (partial[(n * chunks + j)
// * C + ch]): each channel's chunks share its shift (the sample's first row), so their
// sums add up in chunk order; the channel's moments then merge into its group's in
// channel order.
template <class T>
Moments channels_last_group_moments(const Geometry& g, int64_t n, int64_t first, int64_t count,
                                    const RowChunks& plan, const ShiftedSums* partial,
                                    const T* x) {
  const int64_t sample = g.spatial * g.c;
  Moments total{};
  for (int64_t ch = first; ch < first + count; ++ch) {
    ShiftedSums s{};
    for (int64_t j = 0; j < plan.count; ++j) {
      const ShiftedSums& p = partial[(n * plan.count + j) * g.c + ch];
      s = ShiftedSums{s.s1 + p.s1, s.s2 + p.s2};
    }
    total = merge(total, moments_from_shifted_sums(
                             static_cast<double>(g.spatial),
                             finite_shift(static_cast<double>(x[n * sample + ch])), s.s1, s.s2));
  }
  return total;
}

// Fused, sample by sample? When the samples keep the threads busy (policy.h) and
// one sample's x and y fit the fused budget (policy.h): each sample is then reduced and
// normalized while it is in L2, 2T instead of 3T (measured, one thread, float32, best of 8
// alternating runs: (8,64,56,56) G=32 22.8 -> 25.7 GB/s, (32,256,14,14) G=32 20.3 -> 23.6).
// The partials, their folds and the maps are those of the separate passes: the same bits.
bool fused_samples(const Geometry& g, int nt, int64_t value_bytes) {
  return 2 * g.spatial * g.c * value_bytes <= fused_slice_budget() &&
         items_fill_threads(g.n, nt);
}

template <class T>
void forward_channels_last(const Geometry& g, int64_t groups, const T* x, T* y,
                           Moments* moments, const ChannelAffine<T>& maps,
                           const GroupForwardFn& fn, int nt) {
  const int64_t per_group = g.c / groups, sample = g.spatial * g.c;
  const RowChunks plan(Geometry{1, g.c, g.spatial, true});
  const ApplyOptions<T> o = plain_options<T>(g);
  if (fused_samples(g, nt, int64_t{sizeof(T)})) {
    ShiftedSums* partial = thread_scratch<ShiftedSums>(g.n * plan.count * g.c);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t n = 0; n < g.n; ++n) {
      // The items of sample_row_partials for this sample, in its order.
      for (int64_t j = 0; j < plan.count; ++j)
        for (int64_t c0 = 0; c0 < g.c; c0 += kColumnBlock)
          shifted_sums_rows(x + n * sample, g.c, plan.row_begin(j), plan.row_end(j), c0,
                            std::min(g.c, c0 + kColumnBlock),
                            partial + (n * plan.count + j) * g.c + c0);
      for (int64_t gr = 0; gr < groups; ++gr) {
        moments[n * groups + gr] =
            channels_last_group_moments(g, n, gr * per_group, per_group, plan, partial, x);
        fn.call(fn.context, n * groups + gr, moments[n * groups + gr]);
      }
      affine_rows(x + n * sample, y + n * sample, g.c, 0, g.spatial, sample_maps(maps, n * g.c),
                  o);
    }
    return;
  }
  const ShiftedSums* partial = sample_row_partials<ShiftedSums>(
      g.n, g.c, plan, nt, [&](int64_t n, int64_t chunk, int64_t c0, int64_t c1, ShiftedSums* out) {
        shifted_sums_rows(x + n * sample, g.c, plan.row_begin(chunk), plan.row_end(chunk), c0, c1,
                          out);
      });
  for (int64_t n = 0; n < g.n; ++n)
    for (int64_t gr = 0; gr < groups; ++gr) {
      moments[n * groups + gr] =
          channels_last_group_moments(g, n, gr * per_group, per_group, plan, partial, x);
      fn.call(fn.context, n * groups + gr, moments[n * groups + gr]);
    }
  for_each_sample_row_block(g, nt, [&](int64_t n, int64_t r0, int64_t r1) {
    affine_rows(x + n * sample, y + n * sample, g.c, r0, r1, sample_maps(maps, n * g.c), o);
  });
}

template <class T>
void backward_channels_last(const Geometry& g, int64_t groups, const T* x, const T* dy, T* dx,
                            const T* center, BackwardSums* sums, const BackwardAffine<T>& maps,
                            const GroupBackwardFn& fn, int nt) {
  const int64_t per_group = g.c / groups, sample = g.spatial * g.c;
  const RowChunks plan(Geometry{1, g.c, g.spatial, true});
  const BackwardSums* partial = sample_row_partials<BackwardSums>(
      g.n, g.c, plan, nt,
      [&](int64_t n, int64_t chunk, int64_t c0, int64_t c1, BackwardSums* out) {
        backward_sums_rows(x + n * sample, dy + n * sample, g.c, plan.row_begin(chunk),
                           plan.row_end(chunk), c0, c1, center + n * g.c, ReluGate<T>{}, out);
      });
  for (int64_t n = 0; n < g.n; ++n) {
    for (int64_t ch = 0; ch < g.c; ++ch) {
      BackwardSums total{};
      for (int64_t j = 0; j < plan.count; ++j)
        total = add_sums(total, partial[(n * plan.count + j) * g.c + ch]);
      sums[n * g.c + ch] = total;
    }
    for (int64_t gr = 0; gr < groups; ++gr)
      fn.call(fn.context, n * groups + gr, sums + n * g.c + gr * per_group);
  }
  if (!dx) return;
  const ApplyOptions<T> o = plain_options<T>(g);
  for_each_sample_row_block(g, nt, [&](int64_t n, int64_t r0, int64_t r1) {
    backward_affine_rows(x + n * sample, dy + n * sample, dx + n * sample, g.c, r0, r1,
                         sample_maps(maps, n * g.c), o);
  });
}

}  // namespace

template <class T>
void group_norm_forward(const Geometry& g, int64_t groups, const T* x, T* y, Moments* moments,
                        const ChannelAffine<T>& maps, const GroupForwardFn& fn, int threads) {
  assert(g.n > 0 && g.c > 0 && g.spatial > 0 && groups > 0 && g.c % groups == 0);
  const int nt = threads_for(g.values(), threads);
  if (g.channels_last && g.spatial > 1)
    forward_channels_last(g, groups, x, y, moments, maps, fn, nt);
  else
    forward_channels_first(g, groups, x, y, moments, maps, fn, nt);
}

template <class T>
void group_norm_backward(const Geometry& g, int64_t groups, const T* x, const T* dy, T* dx,
                         const T* center, BackwardSums* sums, const BackwardAffine<T>& maps,
                         const GroupBackwardFn& fn, int threads) {
  assert(g.n > 0 && g.c > 0 && g.spatial > 0 && groups > 0 && g.c % groups == 0);
  const int nt = threads_for(g.values(), threads);
  if (g.channels_last && g.spatial > 1)
    backward_channels_last(g, groups, x, dy, dx, center, sums, maps, fn, nt);
  else
    backward_channels_first(g, groups, x, dy, dx, center, sums, maps, fn, nt);
}

#define BNORM_INSTANTIATE(T)                                                                 \
  template void group_norm_forward<T>(const Geometry&, int64_t, const T*, T*, Moments*,      \
                                      const ChannelAffine<T>&, const GroupForwardFn&, int);  \
  template void group_norm_backward<T>(const Geometry&, int64_t, const T*, const T*, T*,     \
                                       const T*, BackwardSums*, const BackwardAffine<T>&,    \
                                       const GroupBackwardFn&, int);
BNORM_INSTANTIATE(float)
BNORM_INSTANTIATE(double)
#undef BNORM_INSTANTIATE

}  // namespace bnorm::kernels
