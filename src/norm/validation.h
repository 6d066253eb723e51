// What every normalization's front-end shares: failures with a message that names the
// argument and what was expected (thrown as bnorm::Error, which the C API turns into a
// status), the common checks, and per-thread scratch that only grows.
#pragma once

#include <bnorm/bnorm.h>
#include <bnorm/error.hpp>  // bnorm::Error

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <sstream>
#include <string>
#include <vector>

namespace bnorm::norm {

// Throws Error(status, "op: message").
[[noreturn]] void fail(bnorm_status status, const char* op, const std::string& message);

// A value as the messages print it (17 significant digits for floating point).
template <class V>
std::string str(V value) {
  std::ostringstream out;
  out.precision(17);
  out << value;
  return out.str();
}

// BNORM_ERROR_NULL_POINTER "name must not be NULL" when pointer is null.
void require(const void* pointer, const char* op, const char* name);

// eps finite and >= 0 (batch norm: eps = 0 is allowed, a constant channel then has
// invstd 0).
void check_eps(const char* op, double eps);

// eps finite and > 0 (layer, group, instance and RMS norm: PyTorch gives NaN for a
// constant row at eps = 0; bnorm refuses it instead, docs/normalizations.md).
void check_positive_eps(const char* op, double eps);

// a * b * ..., or BNORM_ERROR_SIZE_OVERFLOW naming `what`.
int64_t checked_product(const char* op, const char* what, std::initializer_list<int64_t> sizes);

// Per-call scratch, per thread, that only grows: after the first call of a given size
// the front-end allocates nothing (a training loop counts on that). It is sized before
// anything is written, so an allocation failure, too, leaves every output untouched.
// Tag keeps arrays of the same element type apart. Zero-filled.
template <class Tag, class U>
U* scratch(size_t count) {
  thread_local std::vector<U> buffer;
  if (buffer.size() < count) buffer.resize(count);
  std::fill_n(buffer.data(), count, U{});
  return buffer.data();
}

// values[i] as double, or `fallback` when values is null (an optional weight or bias).
template <class T>
double value_or(const T* values, int64_t i, double fallback) {
  return values ? static_cast<double>(values[i]) : fallback;
}

}  // namespace bnorm::norm
