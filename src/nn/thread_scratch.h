// Per-thread work buffers that survive across calls (no allocation per batch), and
// a fixed-order sum of per-thread partials (deterministic for a given thread count:
// schedule(static) hands every thread the same items each time).
#pragma once

#include <omp.h>

#include <cstddef>
#include <vector>

namespace bnorm::nn {

template <class T>
class ThreadScratch {
 public:
  // Makes one buffer of `size` values per OpenMP thread; allocates only when the
  // thread count or the size grows.
  void prepare(size_t size) {
    const auto threads = static_cast<size_t>(omp_get_max_threads());
    if (buffers_.size() < threads) buffers_.resize(threads);
    for (auto& b : buffers_)
      if (b.size() < size) b.resize(size);
    size_ = size;
  }
  T* get(int thread) { return buffers_[static_cast<size_t>(thread)].data(); }

  // Zeroes the first `size()` values of every buffer, including those of threads that
  // an earlier, larger team used and this one may not: sum_into adds them all.
  void zero_all() {
    for (auto& b : buffers_)
      for (size_t i = 0; i < size_; ++i) b[i] = T(0);
  }
  size_t size() const { return size_; }

  // out[i] = sum over threads, in thread order, of buffer[t][i].
  void sum_into(T* out, size_t count) const {
    for (size_t i = 0; i < count; ++i) out[i] = T(0);
    for (const auto& b : buffers_)
      for (size_t i = 0; i < count; ++i) out[i] += b[i];
  }

 private:
  std::vector<std::vector<T>> buffers_;
  size_t size_ = 0;
};

}  // namespace bnorm::nn
