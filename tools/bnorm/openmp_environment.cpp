#include "openmp_environment.h"

#include <unistd.h>

#include <cstdlib>

namespace bnorm::cli {

void ensure_openmp_wait_policy(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
  if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
  execv("/proc/self/exe", argv);
  // execv returned: it failed; run on with libgomp's default policy.
}

}  // namespace bnorm::cli
