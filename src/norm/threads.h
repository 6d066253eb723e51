// The thread count every front-end call uses, and the name of the kernels' compiled
// variant. The C API's bnorm_set_num_threads / bnorm_get_num_threads / bnorm_kernel_isa
// (src/api/threads_api.cpp) are these.
#pragma once

namespace bnorm::norm {

// n >= 1: every later call uses n threads; n <= 0: OpenMP's default again.
void set_num_threads(int n);

// Threads every call uses (>= 1). With BNORM_LOG set (and not "0"), the first call says
// on stderr which kernels run and the policies that choose their paths.
int num_threads();

// The compiled variant of the kernels this CPU runs, e.g. "x86-64-v4 (AVX-512)".
const char* kernel_isa();

}  // namespace bnorm::norm
