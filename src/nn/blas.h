// The one door to BLAS: row-major GEMM for float and double, and the thread count.
// Everything dense in the engine (convolution via im2col, linear layers) goes
// through here; we do not write our own GEMM.
#pragma once

#include <cstdint>

namespace bnorm::nn {

// C[m x n] = alpha * op(A) * op(B) + beta * C, all row-major; op(A) is m x k.
template <class T>
void gemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, T alpha,
          const T* a, int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

// Threads for the engine: OpenMP (our loops and OpenBLAS's OpenMP build) and the
// batch norm library. Returns the count now in effect.
int set_engine_threads(int threads);
int engine_threads();

// Loads OpenBLAS if it is not yet loaded; throws std::runtime_error when it cannot.
// Layers call it at construction so that the first GEMM inside a parallel region
// never has to load it.
void load_blas();


}  // namespace bnorm::nn
