// Numpy arrays as the C++ API's views: the checks and conversions every binding shares
// (python/src/bindings.cpp, the functional API; python/src/module.cpp, the module).
//
// Arrays are (N, C, *spatial) as in PyTorch. A C-contiguous array runs the
// channels-first kernel; an array whose memory is (N, *spatial, C) contiguous (channel
// stride 1, e.g. x_nhwc.transpose(0, 3, 1, 2)) runs the channels-last kernel without a
// copy; any other strides are copied first. Outputs keep the input's layout.
// dtype float32 or float64, the same for every array of a call; anything else is a
// TypeError. Bad sizes and values are ValueErrors.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <bnorm/bnorm.hpp>

#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

namespace bnorm::python {

namespace py = pybind11;


inline std::string shape_string(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t d = 0; d < a.ndim(); ++d)
    s += (d ? ", " : "") + std::to_string(a.shape(d));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

inline py::array as_numpy(py::handle obj, const char* name) {
  if (py::isinstance<py::array>(obj)) return py::reinterpret_borrow<py::array>(obj);
  try {
    return py::module_::import("numpy").attr("asarray")(obj).cast<py::array>();
  } catch (const py::error_already_set&) {
    throw py::type_error(std::string(name) + " must be a numpy array (or array-like), got " +
                         std::string(py::str(obj.get_type().attr("__name__"))));
  }
}

inline bool is_aligned(const py::array& a) {
  return a.attr("flags").attr("aligned").cast<bool>();
}

// Layout of an (N, C, *spatial) array's memory, or nullopt when it is neither (or the
// data are not aligned for their type: the kernels read them as T*).
inline std::optional<Layout> memory_layout(const py::array& a) {
  if (!is_aligned(a)) return std::nullopt;
  if (a.flags() & py::array::c_style) return Layout::channels_first;
  const py::ssize_t nd = a.ndim();
  if (nd < 3) return std::nullopt;
  // Channels-last strides, in elements: C = 1, last spatial = C, each earlier spatial dim
  // = the next one's stride * size, N = stride of dim 2 * size of dim 2. Dims of size 1
  // may carry any stride.
  std::vector<py::ssize_t> expected(static_cast<size_t>(nd));
  expected[1] = 1;
  py::ssize_t stride = a.shape(1);
  for (py::ssize_t d = nd - 1; d >= 2; --d) {
    expected[d] = stride;
    stride *= a.shape(d);
  }
  expected[0] = stride;
  for (py::ssize_t d = 0; d < nd; ++d)
    if (a.shape(d) > 1 && a.strides(d) != expected[d] * a.itemsize()) return std::nullopt;
  return Layout::channels_last;
}

inline std::vector<int64_t> sizes_of(const py::array& a) {
  return std::vector<int64_t>(a.shape(), a.shape() + a.ndim());
}

// A new array shaped like x = (N, C, *spatial) whose memory is in `layout` order.
template <class T>
py::array empty_like_layout(const std::vector<int64_t>& sizes, Layout layout) {
  if (layout == Layout::channels_first || sizes.size() < 3)
    return py::array_t<T>(std::vector<py::ssize_t>(sizes.begin(), sizes.end()));
  std::vector<py::ssize_t> memory_order{sizes[0]};  // (N, *spatial, C)
  for (size_t d = 2; d < sizes.size(); ++d) memory_order.push_back(sizes[d]);
  memory_order.push_back(sizes[1]);
  py::list axes;  // (N, C, *spatial) view of it
  axes.append(0);
  axes.append(sizes.size() - 1);
  for (size_t d = 1; d + 1 < sizes.size(); ++d) axes.append(d);
  return py::array_t<T>(memory_order).attr("transpose")(py::tuple(axes)).template cast<py::array>();
}

// A (N, C, *spatial) input as a view in `want` layout (or its own layout when want is
// nullopt), copying only when the memory is in neither layout or not the wanted one.
template <class T>
struct Tensor {
  py::array array;  // keeps the data alive
  Layout layout = Layout::channels_first;

  TensorView<const T> view() const {
    return {static_cast<const T*>(array.data()), sizes_of(array), layout};
  }
};

template <class T>
Tensor<T> tensor_input(const py::array& a, const char* name, std::optional<Layout> want) {
  if (a.ndim() < 2)
    throw py::value_error(std::string(name) + " must have at least 2 dims (N, C, *spatial), got shape " +
                          shape_string(a));
  const std::optional<Layout> have = memory_layout(a);
  if (have && (!want || *want == *have)) return {a, *have};
  const Layout layout = want.value_or(Layout::channels_first);
  py::array copy = empty_like_layout<T>(sizes_of(a), layout);
  py::module_::import("numpy").attr("copyto")(copy, a);
  return {copy, layout};
}

inline char dtype_char(const py::array& a) { return a.dtype().kind() == 'f' ? 'f' : 'x'; }

inline std::string dtype_name(const py::array& a) {
  return py::str(a.dtype()).cast<std::string>();
}

template <class T>
const char* type_name() {
  return std::is_same_v<T, float> ? "float32" : "float64";
}

template <class T>
void require_dtype(const py::array& a, const char* name) {
  if (!py::isinstance<py::array_t<T>>(a) || dtype_char(a) != 'f')
    throw py::type_error(std::string(name) + " must be " + type_name<T>() + " like x, got " +
                         dtype_name(a));
}

// A per-channel input: None -> empty span; else a 1-D array of C values of dtype T.
template <class T>
std::span<const T> channel_input(py::handle obj, const char* name, int64_t channels,
                                 py::array& keep) {
  if (obj.is_none()) return {};
  py::array a = as_numpy(obj, name);
  require_dtype<T>(a, name);
  if (a.ndim() != 1 || a.shape(0) != channels)
    throw py::value_error(std::string(name) + " must have shape (" + std::to_string(channels) +
                          ",), one value per channel of x, got " + shape_string(a));
  py::list requirements;  // a copy only when needed
  requirements.append("C_CONTIGUOUS");
  requirements.append("ALIGNED");
  keep = py::module_::import("numpy").attr("require")(a, py::none(), requirements).cast<py::array>();
  return {static_cast<const T*>(keep.data()), static_cast<size_t>(channels)};
}

// A per-channel buffer updated in place: None -> empty span; else a writable,
// contiguous numpy array of C values of dtype T.
template <class T>
std::span<T> channel_buffer(py::handle obj, const char* name, int64_t channels) {
  if (obj.is_none()) return {};
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(name) + " must be a numpy array (it is updated in place), got " +
                         std::string(py::str(obj.get_type().attr("__name__"))));
  auto a = py::reinterpret_borrow<py::array>(obj);
  require_dtype<T>(a, name);
  if (a.ndim() != 1 || a.shape(0) != channels)
    throw py::value_error(std::string(name) + " must have shape (" + std::to_string(channels) +
                          ",), one value per channel of x, got " + shape_string(a));
  if (!(a.flags() & py::array::c_style) || !a.writeable() || !is_aligned(a))
    throw py::value_error(std::string(name) +
                          " must be a writable, contiguous, aligned array (it is updated in place)");
  return {static_cast<T*>(a.mutable_data()), static_cast<size_t>(channels)};
}

// A new array of C values stored into `out`; returns its span.
template <class T>
std::span<T> channel_output(py::object& out, int64_t channels) {
  py::array_t<T> array(channels);
  out = array;
  return {array.mutable_data(), static_cast<size_t>(channels)};
}

inline py::array x_array(py::handle obj) {
  py::array x = as_numpy(obj, "x");
  // array_t's isinstance also rejects non-native byte orders ('>f4').
  if (!py::isinstance<py::array_t<float>>(x) && !py::isinstance<py::array_t<double>>(x))
    throw py::type_error("x must be float32 or float64 (native byte order), got " + dtype_name(x));
  return x;
}

template <class F>
auto dispatch(const py::array& x, F&& f) {
  return x.itemsize() == 4 ? f(float{}) : f(double{});
}

// A module's batch counter: None (no count kept), or a writable 0-d int64 array that
// the C++ front-end checks (>= 0, below INT64_MAX), reads for the cumulative average's
// factor and increments after a successful call.
inline int64_t* counter_buffer(py::handle obj) {
  if (obj.is_none()) return nullptr;
  if (!py::isinstance<py::array_t<int64_t>>(obj) ||
      py::reinterpret_borrow<py::array>(obj).dtype().kind() != 'i')
    throw py::type_error("num_batches_tracked must be a 0-d int64 numpy array (it is "
                         "incremented in place), got " +
                         std::string(py::str(obj.get_type().attr("__name__"))));
  auto a = py::reinterpret_borrow<py::array>(obj);
  if (a.ndim() != 0 || !a.writeable() || !is_aligned(a))
    throw py::value_error("num_batches_tracked must be a writable, aligned 0-d int64 array "
                          "(it is incremented in place), got shape " + shape_string(a));
  return static_cast<int64_t*>(a.mutable_data());
}

// The running variance's estimator by its Python name.
inline bnorm::RunningVar running_var_of(const std::string& running_var_estimator) {
  if (running_var_estimator == "unbiased") return bnorm::RunningVar::unbiased;
  if (running_var_estimator == "biased") return bnorm::RunningVar::biased;
  throw py::value_error("running_var_estimator must be 'unbiased' or 'biased', got '" +
                        running_var_estimator + "'");
}

// Shared by both backward forms: x, dy in one layout; outputs allocated as requested.
template <class T>
struct BackwardCall {
  Tensor<T> x, dy;
  int64_t c;
  py::object dx = py::none(), dweight = py::none(), dbias = py::none();  // None: not requested
  TensorView<T> dx_view;
  std::span<T> dweight_span, dbias_span;

  BackwardCall(const py::array& x_arr, py::handle dy_obj, bool need_dx, bool need_dweight,
               bool need_dbias)
      : x(tensor_input<T>(x_arr, "x", std::nullopt)), c(x_arr.shape(1)) {
    py::array dy_arr = as_numpy(dy_obj, "dy");
    require_dtype<T>(dy_arr, "dy");
    if (sizes_of(dy_arr) != sizes_of(x_arr))
      throw py::value_error("dy must have x's shape " + shape_string(x_arr) + ", got " +
                            shape_string(dy_arr));
    dy = tensor_input<T>(dy_arr, "dy", x.layout);
    if (need_dx) {
      py::array out = empty_like_layout<T>(sizes_of(x_arr), x.layout);
      dx_view = {static_cast<T*>(out.mutable_data()), sizes_of(x_arr), x.layout};
      dx = out;
    }
    if (need_dweight) dweight_span = channel_output<T>(dweight, c);
    if (need_dbias) dbias_span = channel_output<T>(dbias, c);
  }

  py::tuple result() const { return py::make_tuple(dx, dweight, dbias); }
};

}  // namespace bnorm::python
