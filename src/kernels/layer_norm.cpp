// LayerNorm's and RMSNorm's kernel driver (layer_norm.h): rows to threads, each row
// reduced and mapped while cached, column partials folded in a fixed order.
#include "kernels/layer_norm.h"

#include <algorithm>
#include <cassert>
#include <cstring>

#include "kernels/chunk_plans.h"
#include "kernels/policy.h"
#include "kernels/reduce.h"
#include "kernels/work_split.h"

namespace bnorm::kernels {
namespace {

// Work-split sizes of the backward's column sums (the bits of dweight and dbias depend
// on them, never on the thread count): rows go in chunks of at least kMinRowsPerColumnChunk
// rows, at most kColumnChunks chunks. Each chunk keeps 2 * cols doubles of partials, so
// the scratch is at most 16 bytes per 32 input values (an eighth of a float tensor) and,
// for (8192, 768), 64 chunks = 0.8 MB: written once and read once by the fold, about 2%
// of the backward's 3T.
constexpr int64_t kColumnChunks = 64;
constexpr int64_t kMinRowsPerColumnChunk = 32;

struct ColumnChunks {
  int64_t rows, rows_per_chunk, count;
  explicit ColumnChunks(int64_t rows_)
      : rows(rows_),
        rows_per_chunk(std::max(kMinRowsPerColumnChunk, ceil_div(rows_, kColumnChunks))),
        count(ceil_div(rows_, rows_per_chunk)) {}
  int64_t begin(int64_t chunk) const { return chunk * rows_per_chunk; }
  int64_t end(int64_t chunk) const { return std::min(rows, (chunk + 1) * rows_per_chunk); }
};

// Columns per work item of the fold.
constexpr int64_t kFoldColumns = 1024;

// out[j] = T(p(0, j) + p(1, j) + ... + p(count - 1, j)), p(chunk, j) =
// partial[chunk * stride + j], always in chunk order (folded into chunk 0's row).
template <class T>
void fold_column_partials(int64_t cols, int64_t count, double* partial, int64_t stride, T* out,
                          int nt) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (int64_t j0 = 0; j0 < cols; j0 += kFoldColumns) {
    const int64_t j1 = std::min(cols, j0 + kFoldColumns);
    for (int64_t chunk = 1; chunk < count; ++chunk)
      for (int64_t j = j0; j < j1; ++j) partial[j] += partial[chunk * stride + j];
    for (int64_t j = j0; j < j1; ++j) out[j] = static_cast<T>(partial[j]);
  }
}

}  // namespace

template <class T>
void layer_norm_forward(int64_t rows, int64_t cols, const T* x, T* y, const T* weight,
                        const T* bias, const RowStatisticsFn<T>& statistics, int threads) {
  assert(rows > 0 && cols > 0 && threads >= 1);
  // Each row is one channels-first "channel" of one sample: one chunk, or pieces of
  // kChunk values for rows longer than that (merged in order, Chan's formula).
  const ChannelsFirstChunks plan(Geometry{1, rows, cols, false});
  const int nt = threads_for(rows * cols, threads);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    // The next row's first lines, on their way while this row is reduced and mapped.
    if (r + 1 < rows)
      prefetch_bytes(xr + cols, std::min(kRowPrefetchBytes, cols * int64_t{sizeof(T)}));
    const double shift = finite_shift(static_cast<double>(xr[0]));
    Moments moments{};
    for (int64_t j = 0; j < plan.count; ++j)
      moments = merge(moments, moments_chunk(xr, plan, j, shift));
    const RowCoefficients<T> c = statistics.call(statistics.context, r, moments);
    column_affine_row(xr, y + r * cols, cols, c, weight, bias);
  }
}

template <class T>
void layer_norm_backward(int64_t rows, int64_t cols, const T* x, const T* dy, T* dx,
                         const T* weight, const T* center, bool row_sums,
                         const RowSumsFn<T>& coefficients, T* dweight, T* dbias, int threads) {
  assert(rows > 0 && cols > 0 && threads >= 1);
  const ColumnChunks plan(rows);
  const int nt = threads_for(rows * cols, threads);
  // Partials: chunk c's dweight at partial[(2c) * cols], its dbias at [(2c + 1) * cols].
  struct PartialTag {};
  double* partial = (dweight || dbias) ? thread_scratch<double, PartialTag>(2 * plan.count * cols)
                                       : nullptr;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (int64_t chunk = 0; chunk < plan.count; ++chunk) {
    // The column map computes db only beside dw: with dbias alone, dw goes to the scratch.
    double* dw = partial ? partial + 2 * chunk * cols : nullptr;
    double* db = dbias ? partial + (2 * chunk + 1) * cols : nullptr;
    for (int64_t r0 = plan.begin(chunk); r0 < plan.end(chunk); r0 += kRowBlock) {
      const int64_t r1 = std::min(plan.end(chunk), r0 + kRowBlock);
      BackwardCoefficients<T> c[kRowBlock];
      for (int64_t r = r0; r < r1; ++r) {
        const T* xr = x + r * cols;
        const T* dyr = dy + r * cols;
        const bool next = r + 1 < rows;  // prefetched while this row is read
        const BackwardSums sums =
            row_sums ? weighted_backward_sums_row(xr, dyr, weight, cols,
                                                  center ? static_cast<double>(center[r]) : 0.0,
                                                  next ? xr + cols : nullptr,
                                                  next ? dyr + cols : nullptr)
                     : BackwardSums{};
        c[r - r0] = coefficients.call(coefficients.context, r, sums);
      }
      column_backward_affine_rows(x + r0 * cols, dy + r0 * cols, weight,
                                  dx ? dx + r0 * cols : nullptr, r1 - r0, cols, c, dw, db,
                                  r0 == plan.begin(chunk));
    }
  }
  if (dweight) fold_column_partials(cols, plan.count, partial, 2 * cols, dweight, nt);
  if (dbias) fold_column_partials(cols, plan.count, partial + cols, 2 * cols, dbias, nt);
}

#define BNORM_INSTANTIATE(T)                                                               \
  template void layer_norm_forward<T>(int64_t, int64_t, const T*, T*, const T*, const T*,  \
                                      const RowStatisticsFn<T>&, int);                     \
  template void layer_norm_backward<T>(int64_t, int64_t, const T*, const T*, T*, const T*, \
                                       const T*, bool, const RowSumsFn<T>&, T*, T*, int);
BNORM_INSTANTIATE(float)
BNORM_INSTANTIATE(double)
#undef BNORM_INSTANTIATE

}  // namespace bnorm::kernels
