#include "norm/validation.h"

#include <cmath>

namespace bnorm::norm {

void fail(bnorm_status status, const char* op, const std::string& message) {
  throw Error(status, std::string(op) + ": " + message);
}

void require(const void* pointer, const char* op, const char* name) {
  if (pointer == nullptr) fail(BNORM_ERROR_NULL_POINTER, op, std::string(name) + " must not be NULL");
}

void check_eps(const char* op, double eps) {
  if (!std::isfinite(eps) || eps < 0)
    fail(BNORM_ERROR_INVALID_VALUE, op, "eps must be finite and >= 0, got " + str(eps));
}

void check_positive_eps(const char* op, double eps) {
  if (!std::isfinite(eps) || eps <= 0)
    fail(BNORM_ERROR_INVALID_VALUE, op, "eps must be finite and > 0, got " + str(eps));
}

int64_t checked_product(const char* op, const char* what, std::initializer_list<int64_t> sizes) {
  int64_t total = 1;
  for (const int64_t s : sizes)
    if (__builtin_mul_overflow(total, s, &total))
      fail(BNORM_ERROR_SIZE_OVERFLOW, op, std::string(what) + " overflows int64_t");
  return total;
}

}  // namespace bnorm::norm
