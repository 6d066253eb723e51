#include "kernels/isa.h"

namespace bnorm::kernels {

const char* kernel_isa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4")) return "x86-64-v4 (AVX-512)";
  if (__builtin_cpu_supports("x86-64-v3")) return "x86-64-v3 (AVX2, FMA)";
  return "x86-64 (SSE2)";
}

}  // namespace bnorm::kernels
