// Every C entry point runs its body through guarded(): the front-end's exception becomes
// a status code plus a per-thread message (bnorm_last_error). No exception crosses into C.
#pragma once

#include <bnorm/bnorm.h>

#include <new>
#include <stdexcept>
#include <string>

#include "norm/validation.h"

namespace bnorm::api {

// Keeps "op + what + detail" as this thread's last error; when that itself runs out of
// memory the message is cut to empty rather than letting an exception escape into C.
void set_last_error(const char* op, const char* what, const char* detail = "") noexcept;

template <class F>
bnorm_status guarded(const char* op, F&& body) noexcept {
  try {
    body();
    return BNORM_SUCCESS;
  } catch (const bnorm::Error& e) {
    set_last_error("", e.what());
    return e.status();
  } catch (const std::bad_alloc&) {
    set_last_error(op, ": out of memory allocating scratch space");
    return BNORM_ERROR_OUT_OF_MEMORY;
  } catch (const std::length_error&) {
    set_last_error(op, ": out of memory (size too large)");
    return BNORM_ERROR_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    set_last_error(op, ": internal error: ", e.what());
    return BNORM_ERROR_INTERNAL;
  } catch (...) {
    set_last_error(op, ": internal error");
    return BNORM_ERROR_INTERNAL;
  }
}

}  // namespace bnorm::api
