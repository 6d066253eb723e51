// The row-wise normalizations' backward reduction (row_maps.h): one row's weighted sums
// on lanes.h's BackwardLanes.
//
// The weight is per column, so it cannot come out of the sums as batch norm's per-channel
// weight does: the lanes sum g = w[j] * dy[j], rounded to T as the dx map rounds the same
// product (so sums and map agree on g), with g * xc and xc, in double. The row is one
// run (value j in lane j % 16, the last cols % 16 values in the tail lanes) that
// prefetches the next row at the same offset as it reads this one: the next row's lines
// then arrive while this row's elementwise pass runs from the cache (perf, one thread,
// (8192, 768) float32: the separate g = w * dy pass, where dy was first read, was about
// half of the row sums' time, which were 58% of the backward).
#include <algorithm>

#include "kernels/lanes.h"
#include "kernels/row_maps.h"

namespace bnorm::kernels {
namespace {

template <class T>
BNORM_INLINE BackwardSums weighted_backward_sums_row_impl(const T* x, const T* dy, const T* w,
                                                          int64_t cols, double center,
                                                          const T* next_x, const T* next_dy) {
  double k[kLanes], s_g[kLanes] = {}, s_gxc[kLanes] = {}, s_xc[kLanes] = {};
  for (double& v : k) v = center;
  BackwardLanes<2, T> lanes(k);
  if (w)
    lanes.template add_run<DyFactor::weight>(x, dy, w, cols, next_x, next_dy);
  else
    lanes.template add_run<DyFactor::none>(x, dy, nullptr, cols, next_x, next_dy);
  lanes.finish(s_g, s_gxc, s_xc);
  return BackwardSums{sum_lanes(s_g), sum_lanes(s_gxc), sum_lanes(s_xc)};
}

}  // namespace

#define BNORM_DEFINE_ROW_REDUCTIONS(T)                                                     \
  BNORM_CLONES BackwardSums weighted_backward_sums_row(const T* x, const T* dy, const T* w, \
                                                       int64_t cols, double center,       \
                                                       const T* next_x, const T* next_dy) { \
    return weighted_backward_sums_row_impl(x, dy, w, cols, center, next_x, next_dy);       \
  }

BNORM_DEFINE_ROW_REDUCTIONS(float)
BNORM_DEFINE_ROW_REDUCTIONS(double)
#undef BNORM_DEFINE_ROW_REDUCTIONS

}  // namespace bnorm::kernels
