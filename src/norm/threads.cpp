// The thread count every call uses: set_num_threads(n), or OpenMP's default.
// Also the debug log: with BNORM_LOG set (and not "0"), the first call says on stderr
// which compiled variant of the kernels runs, with how many threads, and the policies
// that choose between the kernels' paths (threads, fused channels, streaming stores).
#include <omp.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>

#include "kernels/batch_norm.h"
#include "kernels/policy.h"
#include "kernels/isa.h"
#include "norm/threads.h"

namespace bnorm::norm {
namespace {
std::atomic<int> requested_threads{0};  // 0: OpenMP's default

bool log_enabled() {
  const char* v = std::getenv("BNORM_LOG");
  return v && *v && !(v[0] == '0' && v[1] == '\0');
}

bool log_kernel_choice(int threads) {
  if (log_enabled())
    std::fprintf(stderr,
                 "bnorm: batch norm kernels for %s, %d threads (one below %lld values); "
                 "channels-first training fused channel by channel up to %lld KiB of slices "
                 "per channel; streaming stores above %lld MiB of output\n",
                 kernels::kernel_isa(), threads,
                 static_cast<long long>(kernels::min_parallel_values()),
                 static_cast<long long>(kernels::fused_slice_budget() >> 10),
                 static_cast<long long>(kernels::streaming_store_threshold() >> 20));
  return true;
}
}  // namespace

void set_num_threads(int n) { requested_threads.store(n > 0 ? n : 0, std::memory_order_relaxed); }

int num_threads() {
  const int n0 = requested_threads.load(std::memory_order_relaxed);
  static const bool logged = log_kernel_choice(n0 > 0 ? n0 : omp_get_max_threads());
  (void)logged;
  const int n = n0;
  return n > 0 ? n : omp_get_max_threads();
}

const char* kernel_isa() { return kernels::kernel_isa(); }

}  // namespace bnorm::norm
