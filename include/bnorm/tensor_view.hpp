// bnorm::TensorView: the borrowed tensor every C++ entry point takes (bnorm.hpp for batch
// norm, norms.hpp for the family).
#pragma once

#include <bnorm/error.hpp>

#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

BNORM_PUBLIC_BEGIN
namespace bnorm {

// A borrowed tensor. sizes are (N, C, *spatial) whatever the layout (like PyTorch);
// data holds their product of values in (N, C, *spatial) order for channels_first or
// (N, *spatial, C) order for channels_last. Rank 2 to 5 is what people use; any rank
// >= 2 is accepted (layer and RMS norm read any rank >= 1 as row-major).
template <class T>
struct TensorView {
  T* data = nullptr;
  std::vector<int64_t> sizes;
  Layout layout = Layout::channels_first;

  TensorView() = default;
  TensorView(T* data_, std::vector<int64_t> sizes_, Layout layout_ = Layout::channels_first)
      : data(data_), sizes(std::move(sizes_)), layout(layout_) {}
  // A view of T converts to a view of const T.
  template <class U>
    requires std::is_same_v<const U, T>
  TensorView(const TensorView<U>& other)  // NOLINT(google-explicit-constructor)
      : data(other.data), sizes(other.sizes), layout(other.layout) {}
};

}  // namespace bnorm
BNORM_PUBLIC_END
