// OpenBLAS is opened at run time (dlopen), not linked: OpenBLAS picks its kernels
// once, when it is loaded, from the CPU model, and 0.3.21 (Debian 12) does not know
// recent Xeons (Sapphire/Emerald Rapids): it falls back to its SSE3 "Prescott"
// kernels, 2-3x slower here. Loading it ourselves lets us name the kernel family
// from the CPU's features first (OPENBLAS_CORETYPE), unless the user already has.
// Set BNORM_LOG=1 to print the choice (with the batch norm kernels' own, src/norm/threads.cpp).
#include "nn/blas.h"

#include <cblas.h>
#include <dlfcn.h>
#include <omp.h>

#include <bnorm/bnorm.hpp>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#ifndef BNORM_OPENBLAS_PATH
#error "BNORM_OPENBLAS_PATH: the OpenBLAS (OpenMP build) shared library to load"
#endif

namespace bnorm::nn {

namespace {

using SgemmFn = void (*)(CBLAS_ORDER, CBLAS_TRANSPOSE, CBLAS_TRANSPOSE, blasint, blasint, blasint,
                         float, const float*, blasint, const float*, blasint, float, float*, blasint);
using DgemmFn = void (*)(CBLAS_ORDER, CBLAS_TRANSPOSE, CBLAS_TRANSPOSE, blasint, blasint, blasint,
                         double, const double*, blasint, const double*, blasint, double, double*,
                         blasint);
using SetThreadsFn = void (*)(int);
using ConfigFn = char* (*)();

struct Blas {
  SgemmFn sgemm;
  DgemmFn dgemm;
  SetThreadsFn set_num_threads;
  ConfigFn get_config;
  ConfigFn get_corename;
};

const char* core_type_for_this_cpu() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
  return nullptr;  // let OpenBLAS decide
}

void* symbol(void* lib, const char* name) {
  void* f = dlsym(lib, name);
  if (!f) throw std::runtime_error(std::string("BLAS: ") + BNORM_OPENBLAS_PATH + " has no " + name);
  return f;
}

Blas load_blas() {
  if (!std::getenv("OPENBLAS_CORETYPE"))
    if (const char* core = core_type_for_this_cpu()) setenv("OPENBLAS_CORETYPE", core, 0);
  void* lib = dlopen(BNORM_OPENBLAS_PATH, RTLD_NOW | RTLD_LOCAL);
  if (!lib)
    throw std::runtime_error(std::string("BLAS: cannot load ") + BNORM_OPENBLAS_PATH + ": " +
                             dlerror() + " (scripts/install-deps installs libopenblas0-openmp)");
  Blas b{reinterpret_cast<SgemmFn>(symbol(lib, "cblas_sgemm")),
         reinterpret_cast<DgemmFn>(symbol(lib, "cblas_dgemm")),
         reinterpret_cast<SetThreadsFn>(symbol(lib, "openblas_set_num_threads")),
         reinterpret_cast<ConfigFn>(symbol(lib, "openblas_get_config")),
         reinterpret_cast<ConfigFn>(symbol(lib, "openblas_get_corename"))};
  if (const char* v = std::getenv("BNORM_LOG"); v && *v && !(v[0] == '0' && v[1] == '\0'))
    std::fprintf(stderr, "bnorm: BLAS %s (%s), kernels for %s\n", BNORM_OPENBLAS_PATH,
                 b.get_config(), b.get_corename());
  return b;
}

const Blas& blas() {
  static const Blas b = load_blas();  // thread-safe one-time initialization
  return b;
}

blasint to_blas(int64_t v) {
  if (v < 0 || v > INT_MAX) throw std::length_error("gemm: a size does not fit BLAS's int");
  return static_cast<blasint>(v);
}

CBLAS_TRANSPOSE op(bool t) { return t ? CblasTrans : CblasNoTrans; }

}  // namespace

template <>
void gemm<float>(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                 int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  blas().sgemm(CblasRowMajor, op(ta), op(tb), to_blas(m), to_blas(n), to_blas(k), alpha, a,
               to_blas(lda), b, to_blas(ldb), beta, c, to_blas(ldc));
}

template <>
void gemm<double>(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha,
                  const double* a, int64_t lda, const double* b, int64_t ldb, double beta,
                  double* c, int64_t ldc) {
  blas().dgemm(CblasRowMajor, op(ta), op(tb), to_blas(m), to_blas(n), to_blas(k), alpha, a,
               to_blas(lda), b, to_blas(ldb), beta, c, to_blas(ldc));
}

void load_blas() { blas(); }

int set_engine_threads(int threads) {
  if (threads < 1) throw std::invalid_argument("threads: expected at least 1");
  omp_set_dynamic(0);  // teams of exactly `threads`: the partial sums' order depends on it
  omp_set_num_threads(threads);
  blas().set_num_threads(threads);
  bnorm::set_num_threads(threads);
  return engine_threads();
}

int engine_threads() { return omp_get_max_threads(); }

}  // namespace bnorm::nn
