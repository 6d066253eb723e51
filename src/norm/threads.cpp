// The thread count every call uses: bnorm_set_num_threads(n), or OpenMP's default.
#include <omp.h>

#include <atomic>

#include "norm/batch_norm.h"

namespace bnorm::norm {
namespace {
std::atomic<int> requested_threads{0};  // 0: OpenMP's default
}  // namespace

int num_threads() {
  const int n = requested_threads.load(std::memory_order_relaxed);
  return n > 0 ? n : omp_get_max_threads();
}

}  // namespace bnorm::norm

extern "C" void bnorm_set_num_threads(int n) {
  bnorm::norm::requested_threads.store(n > 0 ? n : 0, std::memory_order_relaxed);
}

extern "C" int bnorm_get_num_threads(void) { return bnorm::norm::num_threads(); }
