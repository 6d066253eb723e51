// The speed policies of policy.h: each environment variable is read once, on first use.
#include "kernels/policy.h"

#include <strings.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <limits>

namespace bnorm::kernels {
namespace {

int64_t fused_budget_from_environment() {
  const char* policy = std::getenv("BNORM_FUSED_CHANNELS");
  if (policy && std::strcmp(policy, "never") == 0) return 0;
  // A byte count sets the budget (for measuring where fusing stops paying).
  char* end = nullptr;
  const long long bytes = policy ? std::strtoll(policy, &end, 10) : 0;
  if (policy && end != policy && *end == '\0' && bytes >= 0) return bytes;
  const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
  return l2 > 0 ? 2 * int64_t{l2} : int64_t{1} << 20;
}

int64_t last_level_cache_bytes() {
  for (const int name : {_SC_LEVEL3_CACHE_SIZE, _SC_LEVEL2_CACHE_SIZE}) {
    const long bytes = sysconf(name);
    if (bytes > 0) return bytes;
  }
  return int64_t{32} << 20;
}

int64_t streaming_threshold_from_environment() {
  const char* policy = std::getenv("BNORM_STREAMING_STORES");
  if (policy && std::strcmp(policy, "always") == 0) return 0;
  if (policy && std::strcmp(policy, "never") == 0) return std::numeric_limits<int64_t>::max();
  return last_level_cache_bytes();
}

std::atomic<int64_t> override_budget{-1};
std::atomic<int64_t> override_threshold{-1};

}  // namespace

// Below this many values one thread is faster than several: the cost of waking the
// other threads is what it is weighed against. Spinning threads (libgomp's default)
// wake in microseconds: 2^15 values. Sleeping ones (OMP_WAIT_POLICY=passive, which the
// bnorm command sets on a shared machine) take a futex wake-up, 60-80 us here, as long
// as a thread needs for half a million values: measured, 2 threads against 1, fused
// forward training: (256,16,10,10) 0.21 against 0.18 ms, (256,6,24,24) 0.26 against
// 0.38 ms.
int64_t min_parallel_values() {
  static const int64_t values = [] {
    const char* policy = std::getenv("OMP_WAIT_POLICY");
    return policy && strcasecmp(policy, "passive") == 0 ? int64_t{1} << 19 : int64_t{1} << 15;
  }();
  return values;
}

int64_t fused_slice_budget() {
  const int64_t forced = override_budget.load(std::memory_order_relaxed);
  if (forced >= 0) return forced;
  static const int64_t from_environment = fused_budget_from_environment();
  return from_environment;
}

void override_fused_slice_budget(int64_t bytes) {
  override_budget.store(bytes < 0 ? -1 : bytes, std::memory_order_relaxed);
}

int64_t streaming_store_threshold() {
  const int64_t forced = override_threshold.load(std::memory_order_relaxed);
  if (forced >= 0) return forced;
  static const int64_t from_environment = streaming_threshold_from_environment();
  return from_environment;
}

bool use_streaming_stores(int64_t bytes) { return bytes > streaming_store_threshold(); }

void override_streaming_policy(int64_t threshold_bytes) {
  override_threshold.store(threshold_bytes < 0 ? -1 : threshold_bytes, std::memory_order_relaxed);
}

}  // namespace bnorm::kernels
