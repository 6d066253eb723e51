// Which of the hot loops' compiled variants this CPU runs.
//
// The kernels are built three times (GCC target_clones: x86-64-v4 = AVX-512,
// x86-64-v3 = AVX2 + FMA, baseline x86-64) and the loader picks the highest level the
// CPU supports. kernel_isa() applies the same rule, so it names the variant in use.
#pragma once

namespace bnorm::kernels {

// "x86-64-v4 (AVX-512)", "x86-64-v3 (AVX2, FMA)" or "x86-64 (SSE2)".
const char* kernel_isa();

}  // namespace bnorm::kernels
