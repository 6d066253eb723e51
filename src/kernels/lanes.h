// The vector accumulators of the statistics layer (moments.h): shifted sums and backward
// sums kept in independent lanes, so that the loops vectorize and the order of every
// addition is fixed by the data's position alone.
//
// Lane l of P = 8V lanes takes a run's values l, l + P, l + 2P, ... (a run's tail goes
// to lanes 0, 1, ...). The lanes are held as V vectors of 8 doubles (simd.h), so the
// compiler keeps them in registers instead of spilling arrays. Channels-first runs use
// P = 16 with one shift for all lanes; rows of c < 16 channels use P = lcm(c, 16) as one
// flat run, lane l then always being channel l % c.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/policy.h"
#include "kernels/simd.h"

namespace bnorm::kernels {

// The lanes of one reduction, kept (in registers, once inlined) across all the runs of
// a chunk: a chunk of short rows ((256,16,8,8) has rows of 64 values) would otherwise
// pay the set-up and the spill of the lanes for every row. Within a run, value i goes to
// lane i % P; the run's last len % P values go to the tail lanes 0, 1, ... (separate
// from the vector lanes, so each run is summed the same way wherever it starts).
//
// d = x - shift[l]:  s1[l] += sum(d),  s2[l] += sum(d^2).
template <int V, class T>
struct ShiftedLanes {
  static constexpr int P = 8 * V;
  const double* shift;
  Double8 k[V], a1[V], a2[V];
  double t1[P], t2[P];

  ShiftedLanes() = default;
  BNORM_INLINE explicit ShiftedLanes(const double* lane_shift) { reset(lane_shift); }
  // Empty lanes with shifts lane_shift[0 .. P).
  BNORM_INLINE void reset(const double* lane_shift) {
    shift = lane_shift;
    for (int v = 0; v < V; ++v) {
      load8(shift + 8 * v, k[v]);
      a1[v] = Double8{};
      a2[v] = Double8{};
    }
    for (int l = 0; l < P; ++l) t1[l] = t2[l] = 0;
  }

  // One contiguous run; the run read after it starts at `next` (prefetched as this one
  // is read; nullptr for none).
  // The lanes are copied into locals for the run: a member of an object in an array
  // (the channel-block walk keeps one per channel) would otherwise be loaded and stored
  // around every addition, a store-to-load chain per vector.
  BNORM_INLINE void add_run(const T* x, int64_t len, const T* next = nullptr) {
    Double8 kk[V], b1[V], b2[V];
    for (int v = 0; v < V; ++v) kk[v] = k[v], b1[v] = a1[v], b2[v] = a2[v];
    int64_t i = 0;
    for (; i + P <= len; i += P) {
      for (int64_t line = 0; line < int64_t{P} * int64_t{sizeof(T)}; line += 64)
        prefetch_line(next, i + line / int64_t{sizeof(T)});
      for (int v = 0; v < V; ++v) {
        Double8 d;
        load8(x + i + 8 * v, d);
        d -= kk[v];
        b1[v] += d;
        b2[v] += d * d;
      }
    }
    for (int v = 0; v < V; ++v) a1[v] = b1[v], a2[v] = b2[v];
    for (int l = 0; i < len; ++i, ++l) {
      const double d = static_cast<double>(x[i]) - shift[l];
      t1[l] += d;
      t2[l] += d * d;
    }
  }

  // s1[l] += lane l's sums, for the P lanes.
  BNORM_INLINE void finish(double* s1, double* s2) const {
    double b1[P], b2[P];
    std::memcpy(b1, a1, sizeof b1);
    std::memcpy(b2, a2, sizeof b2);
    for (int l = 0; l < P; ++l) {
      s1[l] += b1[l] + t1[l];
      s2[l] += b2[l] + t2[l];
    }
  }
};

// What multiplies dy before it is summed: nothing, the fused ReLU's gate, or a weight
// per value (the row-wise norms' w[j], applied in T as their dx map applies it).
enum class DyFactor { none, relu_gate, weight };

// xc = x - center[l], g = dy with its factor:
//   s_dy[l] += sum(g),  s_dyxc[l] += sum(g * xc),  s_xc[l] += sum(xc).
// relu_gate: g = !(factor <= 0) ? dy : 0 (the fused ReLU's backward);
// weight:    g = factor * dy, rounded to T;  none: g = dy (factor unused).
template <int V, class T>
struct BackwardLanes {
  static constexpr int P = 8 * V;
  const double* center;
  Double8 k[V], g[V], p[V], q[V];
  double tg[P], tp[P], tq[P];

  BackwardLanes() = default;
  BNORM_INLINE explicit BackwardLanes(const double* lane_center) { reset(lane_center); }
  BNORM_INLINE void reset(const double* lane_center) {
    center = lane_center;
    for (int v = 0; v < V; ++v) {
      load8(center + 8 * v, k[v]);
      g[v] = Double8{};
      p[v] = Double8{};
      q[v] = Double8{};
    }
    for (int l = 0; l < P; ++l) tg[l] = tp[l] = tq[l] = 0;
  }

  // One run; the next starts at next_x and next_dy (prefetched; nullptr for none).
  template <DyFactor F>
  BNORM_INLINE void add_run(const T* x, const T* dy, const T* factor, int64_t len,
                            const T* next_x = nullptr, const T* next_dy = nullptr) {
    Double8 kk[V], bg[V], bp[V], bq[V];  // locals for the run, as in ShiftedLanes
    for (int v = 0; v < V; ++v) kk[v] = k[v], bg[v] = g[v], bp[v] = p[v], bq[v] = q[v];
    int64_t i = 0;
    for (; i + P <= len; i += P) {
      for (int64_t line = 0; line < int64_t{P} * int64_t{sizeof(T)}; line += 64) {
        prefetch_line(next_x, i + line / int64_t{sizeof(T)});
        prefetch_line(next_dy, i + line / int64_t{sizeof(T)});
      }
      for (int v = 0; v < V; ++v) {
        Double8 xc, d;
        load8(x + i + 8 * v, xc);
        if constexpr (F == DyFactor::weight) {
          load8_product(factor + i + 8 * v, dy + i + 8 * v, d);
        } else {
          load8(dy + i + 8 * v, d);
        }
        if constexpr (F == DyFactor::relu_gate) {
          Double8 gv;
          load8(factor + i + 8 * v, gv);
          d = gv <= Double8{} ? Double8{} : d;
        }
        xc -= kk[v];
        bg[v] += d;
        bp[v] += d * xc;
        bq[v] += xc;
      }
    }
    for (int v = 0; v < V; ++v) g[v] = bg[v], p[v] = bp[v], q[v] = bq[v];
    for (int l = 0; i < len; ++i, ++l) {
      const double xc = static_cast<double>(x[i]) - center[l];
      double d;
      if constexpr (F == DyFactor::weight)
        d = static_cast<double>(T(factor[i] * dy[i]));
      else if constexpr (F == DyFactor::relu_gate)
        d = factor[i] <= 0 ? 0.0 : static_cast<double>(dy[i]);
      else
        d = static_cast<double>(dy[i]);
      tg[l] += d;
      tp[l] += d * xc;
      tq[l] += xc;
    }
  }

  BNORM_INLINE void finish(double* s_dy, double* s_dyxc, double* s_xc) const {
    double bg[P], bp[P], bq[P];
    std::memcpy(bg, g, sizeof bg);
    std::memcpy(bp, p, sizeof bp);
    std::memcpy(bq, q, sizeof bq);
    for (int l = 0; l < P; ++l) {
      s_dy[l] += bg[l] + tg[l];
      s_dyxc[l] += bp[l] + tp[l];
      s_xc[l] += bq[l] + tq[l];
    }
  }
};

// Runs the statement with V = lanes / 8 as a constant (lanes in {16, 32, 48, 64}). A switch
// in the caller, not a lambda: a lambda's body would be compiled outside the caller's
// target clone, at the baseline instruction set.
#define BNORM_WITH_LANES(lanes, ...) \
  switch ((lanes) / 8) {              \
    case 2: { constexpr int V = 2; __VA_ARGS__; } break; \
    case 4: { constexpr int V = 4; __VA_ARGS__; } break; \
    case 6: { constexpr int V = 6; __VA_ARGS__; } break; \
    default: { constexpr int V = 8; __VA_ARGS__; } break; \
  }

// Lanes for rows of c channels run flat: lcm(c, 16).
inline int64_t flat_period(int64_t c) {
  int64_t p = 16;
  while (p % c != 0) p += 16;
  return p;
}

// Whole rows of fewer than 16 channels run flat (with lcm(c, 16) <= 64 lanes); from 16
// channels on the column loop is as fast (measured at (256,16,8,8)).
BNORM_INLINE bool flat_rows(int64_t ld, int64_t c0, int64_t c1) {
  return c0 == 0 && c1 == ld && ld < 16 && flat_period(ld) <= kMaxLanes;
}

// The sum of kLanes lanes, in lane order.
inline double sum_lanes(const double* lanes) {
  double s = 0;
  for (int l = 0; l < kLanes; ++l) s += lanes[l];
  return s;
}

}  // namespace bnorm::kernels
