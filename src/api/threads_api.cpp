// The C API's thread count and kernel variant: the front-end's (norm/threads.h), as C.
#include <bnorm/bnorm.h>

#include "norm/threads.h"

extern "C" void bnorm_set_num_threads(int n) { bnorm::norm::set_num_threads(n); }

extern "C" int bnorm_get_num_threads(void) { return bnorm::norm::num_threads(); }

extern "C" const char* bnorm_kernel_isa(void) { return bnorm::norm::kernel_isa(); }
