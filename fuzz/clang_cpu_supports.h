// Force-included (-include) into the clang builds (build-fuzz, build-tsan) only.
//
// src/kernels/isa.cpp asks __builtin_cpu_supports("x86-64-v4") / ("x86-64-v3"): GCC 12
// knows these level names, clang before 16 does not ("invalid cpu feature string for
// builtin"), so clang 14 cannot compile the file. Until isa.cpp has a clang path, this
// maps the two levels onto the features clang 14 knows (the rest of each level's
// features come with these on every CPU that has them). It only changes the name
// kernel_isa() reports; which clone runs is the target_clones resolver's choice.
#pragma once
#if defined(__clang__) && __clang_major__ < 16 && defined(__x86_64__)
#ifdef __cplusplus
#include <cstring>
#else
#include <string.h>
#endif
static inline int bnorm_clang_cpu_supports(const char* feature) {
  if (strcmp(feature, "x86-64-v4") == 0)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  if (strcmp(feature, "x86-64-v3") == 0)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("bmi2");
  return 0;  // no other name is asked for
}
#define __builtin_cpu_supports(feature) bnorm_clang_cpu_supports(feature)
#endif
