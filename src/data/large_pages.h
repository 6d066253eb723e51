// An allocator for the engine's big arrays (the decoded data set, activations): blocks
// of 2 MiB and more are 2 MiB-aligned and marked MADV_HUGEPAGE before anything touches
// them, so the kernel backs them with 2 MiB pages where transparent huge pages are
// enabled ("always" or, as on Debian, "madvise").
//
// Why: a training step gathers 256 images from random places in the 188 MB training set.
// Over 4 KiB pages the first pass over the data paid 2.6 ms per LeNet-BN step for it,
// falling to 0.2 ms only once every page had been visited (docs/training.md); over 2 MiB
// pages the first pass runs at the later speed. Smaller blocks, and systems without
// MADV_HUGEPAGE, get ordinary memory.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdlib>
#include <new>

namespace bnorm::data {

inline constexpr size_t kLargePage = size_t{2} << 20;

template <class T>
struct LargePageAllocator {
  using value_type = T;

  LargePageAllocator() = default;
  template <class U>
  LargePageAllocator(const LargePageAllocator<U>&) noexcept {}

  T* allocate(size_t n) {
    if (n > static_cast<size_t>(-1) / sizeof(T)) throw std::bad_array_new_length();
    const size_t bytes = n * sizeof(T);
    if (bytes < kLargePage) return static_cast<T*>(::operator new(bytes));
    const size_t rounded = (bytes + kLargePage - 1) / kLargePage * kLargePage;
    void* p = std::aligned_alloc(kLargePage, rounded);
    if (!p) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
    madvise(p, rounded, MADV_HUGEPAGE);  // advice only: a refusal leaves 4 KiB pages
#endif
    return static_cast<T*>(p);
  }

  void deallocate(T* p, size_t n) noexcept {
    if (n * sizeof(T) < kLargePage)
      ::operator delete(p);
    else
      std::free(p);
  }

  template <class U>
  bool operator==(const LargePageAllocator<U>&) const noexcept {
    return true;
  }
};

}  // namespace bnorm::data
