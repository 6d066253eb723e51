// The row-wise normalizations' backward reduction (row_maps.h): one row's weighted sums
// on lanes.h's BackwardLanes.
//
// The weight is per column, so it cannot come out of the sums as batch norm's per-channel
// weight does: each piece first forms g = w[j] * dy[j] in T into an L1 buffer (the
// dx map multiplies the same rounded product, so sums and map agree on g), then the
// lanes sum g, g * xc and xc in double. Without a weight dy goes to the lanes directly.
#include <algorithm>

#include "kernels/lanes.h"
#include "kernels/row_maps.h"

namespace bnorm::kernels {
namespace {

template <class T>
BNORM_INLINE BackwardSums weighted_backward_sums_row_impl(const T* x, const T* dy, const T* w,
                                                          int64_t cols, double center) {
  double k[kLanes], s_g[kLanes] = {}, s_gxc[kLanes] = {}, s_xc[kLanes] = {};
  for (double& v : k) v = center;
  alignas(64) T g[kSubPiece];
  BackwardLanes<2, T> lanes(k);
  for (int64_t s = 0; s < cols; s += kSubPiece) {
    const int64_t piece = std::min(kSubPiece, cols - s);
    if (w) {
      for (int64_t i = 0; i < piece; ++i) g[i] = w[s + i] * dy[s + i];
      lanes.template add_run<false>(x + s, g, nullptr, piece);
    } else {
      lanes.template add_run<false>(x + s, dy + s, nullptr, piece);
    }
  }
  lanes.finish(s_g, s_gxc, s_xc);
  return BackwardSums{sum_lanes(s_g), sum_lanes(s_gxc), sum_lanes(s_xc)};
}

}  // namespace

#define BNORM_DEFINE_ROW_REDUCTIONS(T)                                                     \
  BNORM_CLONES BackwardSums weighted_backward_sums_row(const T* x, const T* dy, const T* w, \
                                                       int64_t cols, double center) {     \
    return weighted_backward_sums_row_impl(x, dy, w, cols, center);                        \
  }

BNORM_DEFINE_ROW_REDUCTIONS(float)
BNORM_DEFINE_ROW_REDUCTIONS(double)
#undef BNORM_DEFINE_ROW_REDUCTIONS

}  // namespace bnorm::kernels
