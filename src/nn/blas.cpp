#include "nn/blas.h"

#include <cblas.h>
#include <omp.h>

#include <bnorm/bnorm.hpp>
#include <climits>
#include <stdexcept>

namespace bnorm::nn {

namespace {
blasint to_blas(int64_t v) {
  if (v < 0 || v > INT_MAX) throw std::length_error("gemm: a size does not fit BLAS's int");
  return static_cast<blasint>(v);
}
}  // namespace

template <>
void gemm<float>(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                 int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              to_blas(m), to_blas(n), to_blas(k), alpha, a, to_blas(lda), b, to_blas(ldb), beta,
              c, to_blas(ldc));
}

template <>
void gemm<double>(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha,
                  const double* a, int64_t lda, const double* b, int64_t ldb, double beta,
                  double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              to_blas(m), to_blas(n), to_blas(k), alpha, a, to_blas(lda), b, to_blas(ldb), beta,
              c, to_blas(ldc));
}

int set_engine_threads(int threads) {
  if (threads < 1) throw std::invalid_argument("threads: expected at least 1");
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
  bnorm::set_num_threads(threads);
  return engine_threads();
}

int engine_threads() { return omp_get_max_threads(); }

}  // namespace bnorm::nn
