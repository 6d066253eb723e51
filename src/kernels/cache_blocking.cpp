#include "kernels/cache_blocking.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace bnorm::kernels {
namespace {

int64_t budget_from_environment() {
  const char* policy = std::getenv("BNORM_FUSED_CHANNELS");
  if (policy && std::strcmp(policy, "never") == 0) return 0;
  // A byte count sets the budget (for measuring where fusing stops paying).
  char* end = nullptr;
  const long long bytes = policy ? std::strtoll(policy, &end, 10) : 0;
  if (policy && end != policy && *end == '\0' && bytes >= 0) return bytes;
  const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
  return l2 > 0 ? 2 * int64_t{l2} : int64_t{1} << 20;
}

std::atomic<int64_t> override_budget{-1};

}  // namespace

int64_t fused_slice_budget() {
  const int64_t forced = override_budget.load(std::memory_order_relaxed);
  if (forced >= 0) return forced;
  static const int64_t from_environment = budget_from_environment();
  return from_environment;
}

void override_fused_slice_budget(int64_t bytes) {
  override_budget.store(bytes < 0 ? -1 : bytes, std::memory_order_relaxed);
}

}  // namespace bnorm::kernels
