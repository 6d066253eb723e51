// Numpy helpers the family's bindings add to arrays.h (norm_functional.cpp,
// norm_modules.cpp): row-major inputs for layer/RMS norm, parameters shaped like
// normalized_shape, saved statistics of any shape holding the right count.
#pragma once

#include "arrays.h"

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace bnorm::python {

inline std::string sizes_string(const std::vector<int64_t>& sizes) {
  std::string s = "(";
  for (size_t d = 0; d < sizes.size(); ++d) s += (d ? ", " : "") + std::to_string(sizes[d]);
  return s + (sizes.size() == 1 ? ",)" : ")");
}

// np.require(a, None, [C_CONTIGUOUS, ALIGNED]): a itself, or a C-order copy.
inline py::array c_contiguous(const py::array& a) {
  py::list requirements;
  requirements.append("C_CONTIGUOUS");
  requirements.append("ALIGNED");
  return py::module_::import("numpy").attr("require")(a, py::none(), requirements).cast<py::array>();
}

// x (or dy) of layer / RMS norm: read row-major, copied to C order when it is not.
template <class T>
struct RowMajor {
  py::array array;
  std::vector<int64_t> sizes;

  RowMajor(const py::array& a, const char*) : array(c_contiguous(a)), sizes(sizes_of(a)) {}
  TensorView<const T> view() const {
    return {static_cast<const T*>(array.data()), sizes, Layout::channels_first};
  }
};

// dy of a backward: dtype T and x's shape (in any memory layout).
template <class T>
py::array same_shape_input(py::handle obj, const char* name, const py::array& x) {
  py::array a = as_numpy(obj, name);
  require_dtype<T>(a, name);
  if (sizes_of(a) != sizes_of(x))
    throw py::value_error(std::string(name) + " must have x's shape " + shape_string(x) +
                          ", got " + shape_string(a));
  return a;
}

template <class T>
TensorView<T> mutable_view(py::array& a, Layout layout) {
  return {static_cast<T*>(a.mutable_data()), sizes_of(a), layout};
}

// A parameter shaped like normalized_shape: None -> empty span.
template <class T>
std::span<const T> shaped_input(py::handle obj, const char* name,
                                const std::vector<int64_t>& shape, py::array& keep) {
  if (obj.is_none()) return {};
  py::array a = as_numpy(obj, name);
  require_dtype<T>(a, name);
  if (sizes_of(a) != shape)
    throw py::value_error(std::string(name) + " must have shape normalized_shape " +
                          sizes_string(shape) + ", got " + shape_string(a));
  keep = c_contiguous(a);
  return {static_cast<const T*>(keep.data()), static_cast<size_t>(keep.size())};
}

// Saved statistics from a training forward: any shape holding `count` values (count < 0:
// unknown because x itself is wrong, which the C++ call then reports first).
template <class T>
std::span<const T> saved_input(py::handle obj, const char* name, int64_t count,
                               py::array& keep) {
  if (obj.is_none())
    throw py::value_error(std::string(name) + " (from the training forward) is required");
  py::array a = as_numpy(obj, name);
  require_dtype<T>(a, name);
  if (count >= 0 && a.size() != count)
    throw py::value_error(std::string(name) + " must hold " + std::to_string(count) +
                          " values (what the forward saved for this x), got shape " +
                          shape_string(a));
  keep = c_contiguous(a);
  return {static_cast<const T*>(keep.data()), static_cast<size_t>(keep.size())};
}

// A new array of `shape` stored into `out`; returns its span.
template <class T>
std::span<T> shaped_output(py::object& out, const std::vector<int64_t>& shape) {
  py::array_t<T> array(std::vector<py::ssize_t>(shape.begin(), shape.end()));
  out = array;
  return {array.mutable_data(), static_cast<size_t>(array.size())};
}

// The sizes before the k trailing normalized dims ({0} when x has fewer dims: the call
// then reports x's shape).
inline std::vector<int64_t> leading_shape(const std::vector<int64_t>& sizes, size_t k) {
  if (sizes.size() < k) return {0};
  return std::vector<int64_t>(sizes.begin(), sizes.end() - static_cast<std::ptrdiff_t>(k));
}

// prod(leading_shape), or -1 when x has fewer than k dims.
inline int64_t leading_count(const std::vector<int64_t>& sizes, size_t k) {
  if (sizes.size() < k) return -1;
  int64_t rows = 1;
  for (size_t d = 0; d + k < sizes.size(); ++d) rows *= sizes[d];
  return rows;
}

}  // namespace bnorm::python
