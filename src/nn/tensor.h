// Dense row-major tensors for the training engine.
//
// Shape holds up to four sizes inline (N, C, H, W), so building one per batch does
// not touch the heap. Tensor<T> owns its values in a std::vector whose capacity is
// kept: resizing to a shape no larger than one seen before reuses the storage, which
// is what keeps the training loop free of allocations once the first batch has run.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace bnorm::nn {

class Shape {
 public:
  static constexpr int kMaxRank = 4;

  Shape() = default;
  Shape(std::initializer_list<int64_t> sizes) {
    if (sizes.size() > kMaxRank) throw std::invalid_argument("Shape: at most 4 dimensions");
    for (int64_t s : sizes) sizes_[rank_++] = s;
  }
  static Shape from(std::span<const int64_t> sizes) {
    if (sizes.size() > kMaxRank) throw std::invalid_argument("Shape: at most 4 dimensions");
    Shape s;
    for (int64_t v : sizes) s.sizes_[s.rank_++] = v;
    return s;
  }

  int rank() const { return rank_; }
  int64_t operator[](int i) const { return sizes_[i]; }
  int64_t& operator[](int i) { return sizes_[i]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < rank_; ++i) n *= sizes_[i];
    return n;
  }
  std::span<const int64_t> sizes() const { return {sizes_.data(), static_cast<size_t>(rank_)}; }

  friend bool operator==(const Shape& a, const Shape& b) {
    if (a.rank_ != b.rank_) return false;
    for (int i = 0; i < a.rank_; ++i)
      if (a.sizes_[i] != b.sizes_[i]) return false;
    return true;
  }

  std::string str() const {
    std::string s = "(";
    for (int i = 0; i < rank_; ++i) {
      if (i) s += ", ";
      s += std::to_string(sizes_[i]);
    }
    return s + ")";
  }

 private:
  std::array<int64_t, kMaxRank> sizes_{};
  int rank_ = 0;
};

template <class T>
class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(const Shape& shape) { resize(shape); }

  // Changes the shape; the storage grows only past the largest size seen so far.
  // Values are unspecified after a resize (every layer writes its whole output).
  void resize(const Shape& shape) {
    shape_ = shape;
    values_.resize(static_cast<size_t>(shape.numel()));
  }

  const Shape& shape() const { return shape_; }
  int rank() const { return shape_.rank(); }
  int64_t dim(int i) const { return shape_[i]; }
  int64_t numel() const { return static_cast<int64_t>(values_.size()); }

  T* data() { return values_.data(); }
  const T* data() const { return values_.data(); }
  std::span<T> values() { return values_; }
  std::span<const T> values() const { return values_; }
  T& operator[](int64_t i) { return values_[static_cast<size_t>(i)]; }
  const T& operator[](int64_t i) const { return values_[static_cast<size_t>(i)]; }

  void fill(T v) {
    for (T& x : values_) x = v;
  }

 private:
  Shape shape_;
  std::vector<T> values_;
};

}  // namespace bnorm::nn
