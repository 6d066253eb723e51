// The C++ API promises bnorm::Error for every failure: allocation failures (a vector
// too large, memory exhausted) become BNORM_ERROR_OUT_OF_MEMORY.
#pragma once

#include <bnorm/bnorm.hpp>

#include <new>
#include <stdexcept>
#include <string>

namespace bnorm::api {

template <class F>
decltype(auto) allocation_failures_as_errors(const char* op, F&& body) {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    throw Error(BNORM_ERROR_OUT_OF_MEMORY, std::string(op) + ": out of memory");
  } catch (const std::length_error&) {
    throw Error(BNORM_ERROR_OUT_OF_MEMORY, std::string(op) + ": out of memory (size too large)");
  }
}

}  // namespace bnorm::api
