// bnorm: what the C++ API and the library's front-ends share, apart from the rest of
// the C++ API: bnorm::Error (a failure with its C status code) and the C++ names of
// the C API's enums. <bnorm/bnorm.hpp> includes it, so users need not.
//
// The front-ends (src/norm/) throw Error and read Layout; the C API (src/api/c_api.cpp)
// catches Error and returns its status; the C++ API (bnorm.hpp) is built on both. With
// this header between them, the front-ends depend on neither API header but the C one
// (bnorm.h, for the status codes), and nothing includes bnorm.hpp below the API layer.
#pragma once

#include <bnorm/bnorm.h>

#include <stdexcept>
#include <string>

BNORM_PUBLIC_BEGIN
namespace bnorm {

enum class Layout { channels_first = BNORM_CHANNELS_FIRST, channels_last = BNORM_CHANNELS_LAST };

enum class RunningVar {
  unbiased = BNORM_RUNNING_VAR_UNBIASED,  // PyTorch, cuDNN, the paper
  biased = BNORM_RUNNING_VAR_BIASED       // ONNX, Keras 3, d2l
};

// Every failure of the C++ API: the message names the argument and what was expected;
// status() is the C API's code for the same failure. Nothing is written when thrown.
class Error : public std::runtime_error {
 public:
  Error(bnorm_status status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  bnorm_status status() const noexcept { return status_; }

 private:
  bnorm_status status_;
};

}  // namespace bnorm
BNORM_PUBLIC_END
