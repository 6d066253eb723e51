// bnorm._bnorm: numpy bindings of the C++ functional API (pybind11), and of the C++
// module (module.cpp); the family's in norm_functional.cpp and norm_modules.cpp.
//
// Arrays are (N, C, *spatial) as in PyTorch, in either memory layout (arrays.h).
// dtype float32 or float64, the same for every array of a call; anything else is a
// TypeError. Bad sizes and values are ValueErrors (bnorm::Error carries the message).
// The fused BN+ReLU functions (relu_*) take and return the ReLU's bit mask as a 1-D
// uint8 array: bit i % 8 of byte i / 8 for value i in the memory order of x's layout.
// The training forwards take momentum=None (the cumulative average) and a batch counter
// num_batches_tracked (a 0-d int64 array): the C++ front-end checks the count, computes
// the factor and increments it after success.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <bnorm/bnorm.hpp>

#include <optional>
#include <string>
#include <vector>

#include "arrays.h"

namespace py = pybind11;

namespace {

using namespace bnorm::python;  // the numpy array helpers (arrays.h)
using bnorm::Layout;
using bnorm::TensorView;

// ---- the bound functions ---------------------------------------------------------------

// momentum nullopt (None): the cumulative average, which needs num_batches_tracked.
bnorm::RunningStatsUpdate running_stats_update(std::optional<double> momentum,
                                               const std::string& running_var_estimator,
                                               int64_t* num_batches_tracked = nullptr) {
  return {momentum, running_var_of(running_var_estimator), num_batches_tracked};
}

// Bytes of the ReLU bit mask of x = (N, C, *spatial); <= 0 for a zero-size x.
int64_t relu_mask_bytes(const py::array& x) {
  int64_t spatial = 1;
  for (py::ssize_t d = 2; d < x.ndim(); ++d) spatial *= x.shape(d);
  return bnorm_relu_mask_bytes(x.shape(0), x.shape(1), spatial);
}

// A new ReLU bit mask for x stored into `out`, or an empty span ("not wanted") when !want.
std::span<uint8_t> relu_mask_output(py::object& out, const py::array& x, bool want) {
  if (!want) return {};
  const int64_t bytes = relu_mask_bytes(x);
  if (bytes <= 0) return {};  // zero-size x: the call itself reports x's sizes
  py::array_t<uint8_t> array(bytes);
  out = array;
  return {array.mutable_data(), static_cast<size_t>(bytes)};
}

// relu: the fused BN+ReLU forward, whose mask is appended to the result when return_mask.
py::tuple training_forward(py::handle x_obj, py::handle weight, py::handle bias,
                           py::handle running_mean, py::handle running_var,
                           std::optional<double> momentum, double eps,
                           const std::string& running_var_estimator, py::handle num_batches_tracked,
                           bool relu, bool return_mask) {
  py::array x_arr = x_array(x_obj);
  const bnorm::RunningStatsUpdate update = running_stats_update(
      momentum, running_var_estimator, counter_buffer(num_batches_tracked));
  return dispatch(x_arr, [&](auto zero) -> py::tuple {
    using T = decltype(zero);
    const Tensor<T> x = tensor_input<T>(x_arr, "x", std::nullopt);
    const int64_t c = x_arr.shape(1);
    py::array keep_w, keep_b, y = empty_like_layout<T>(sizes_of(x_arr), x.layout);
    py::object mean, invstd, mask = py::none();
    const auto w = channel_input<T>(weight, "weight", c, keep_w);
    const auto b = channel_input<T>(bias, "bias", c, keep_b);
    const auto rm = channel_buffer<T>(running_mean, "running_mean", c);
    const auto rv = channel_buffer<T>(running_var, "running_var", c);
    const auto sm = channel_output<T>(mean, c), si = channel_output<T>(invstd, c);
    const auto relu_mask = relu_mask_output(mask, x_arr, return_mask);
    TensorView<T> y_view{static_cast<T*>(y.mutable_data()), sizes_of(y), x.layout};
    {
      py::gil_scoped_release release;
      if (relu)
        bnorm::batch_norm_relu_forward_training<T>(x.view(), y_view, w, b, eps, update, rm, rv,
                                                   sm, si, relu_mask);
      else
        bnorm::batch_norm_forward_training<T>(x.view(), y_view, w, b, eps, update, rm, rv, sm,
                                              si);
    }
    if (return_mask) return py::make_tuple(y, mean, invstd, mask);
    return py::make_tuple(y, mean, invstd);
  });
}

py::tuple forward_training(py::handle x, py::handle weight, py::handle bias,
                           py::handle running_mean, py::handle running_var,
                           std::optional<double> momentum, double eps,
                           const std::string& running_var_estimator,
                           py::handle num_batches_tracked) {
  return training_forward(x, weight, bias, running_mean, running_var, momentum, eps,
                          running_var_estimator, num_batches_tracked, false, false);
}

py::tuple relu_forward_training(py::handle x, py::handle weight, py::handle bias,
                                py::handle running_mean, py::handle running_var,
                                std::optional<double> momentum, double eps,
                                const std::string& running_var_estimator, bool return_mask,
                                py::handle num_batches_tracked) {
  return training_forward(x, weight, bias, running_mean, running_var, momentum, eps,
                          running_var_estimator, num_batches_tracked, true, return_mask);
}

// relu: the fused BN+ReLU forward; returns y, or (y, mask) when return_mask.
py::object inference_forward(py::handle x_obj, py::handle weight, py::handle bias,
                             py::handle running_mean, py::handle running_var, double eps,
                             bool relu, bool return_mask) {
  py::array x_arr = x_array(x_obj);
  return dispatch(x_arr, [&](auto zero) -> py::object {
    using T = decltype(zero);
    const Tensor<T> x = tensor_input<T>(x_arr, "x", std::nullopt);
    const int64_t c = x_arr.shape(1);
    py::array keep_w, keep_b, keep_rm, keep_rv;
    py::array y = empty_like_layout<T>(sizes_of(x_arr), x.layout);
    py::object mask = py::none();
    const auto w = channel_input<T>(weight, "weight", c, keep_w);
    const auto b = channel_input<T>(bias, "bias", c, keep_b);
    if (running_mean.is_none() || running_var.is_none())
      throw py::value_error("running_mean and running_var are required for inference "
                            "(training=False)");
    const auto rm = channel_input<T>(running_mean, "running_mean", c, keep_rm);
    const auto rv = channel_input<T>(running_var, "running_var", c, keep_rv);
    const auto relu_mask = relu_mask_output(mask, x_arr, return_mask);
    TensorView<T> y_view{static_cast<T*>(y.mutable_data()), sizes_of(y), x.layout};
    {
      py::gil_scoped_release release;
      if (relu)
        bnorm::batch_norm_relu_forward_inference<T>(x.view(), y_view, w, b, rm, rv, eps,
                                                    relu_mask);
      else
        bnorm::batch_norm_forward_inference<T>(x.view(), y_view, w, b, rm, rv, eps);
    }
    if (return_mask) return py::make_tuple(y, mask);
    return y;
  });
}

py::array forward_inference(py::handle x, py::handle weight, py::handle bias,
                            py::handle running_mean, py::handle running_var, double eps) {
  return inference_forward(x, weight, bias, running_mean, running_var, eps, false, false)
      .cast<py::array>();
}

py::object relu_forward_inference(py::handle x, py::handle weight, py::handle bias,
                                  py::handle running_mean, py::handle running_var, double eps,
                                  bool return_mask) {
  return inference_forward(x, weight, bias, running_mean, running_var, eps, true, return_mask);
}

// The fused backward's ReLU gate, from exactly one of y (the fused forward's output,
// taken in x's layout) and relu_mask (its bit mask, in the memory order of x's layout).
template <class T>
struct ReluGate {
  std::optional<Tensor<T>> y;
  py::array mask;  // 1-D, contiguous uint8; unused when y is given

  ReluGate(const py::array& x_arr, Layout layout, py::handle y_obj, py::handle mask_obj) {
    if (y_obj.is_none() == mask_obj.is_none())
      throw py::value_error(
          std::string("exactly one of y (the fused forward's output) and relu_mask (its bit "
                      "mask) must be given as the ReLU gate, got ") +
          (y_obj.is_none() ? "neither" : "both"));
    if (!y_obj.is_none()) {
      py::array y_arr = as_numpy(y_obj, "y");
      require_dtype<T>(y_arr, "y");
      if (sizes_of(y_arr) != sizes_of(x_arr))
        throw py::value_error("y must have x's shape " + shape_string(x_arr) + ", got " +
                              shape_string(y_arr));
      y = tensor_input<T>(y_arr, "y", layout);
      return;
    }
    py::array m = as_numpy(mask_obj, "relu_mask");
    if (m.dtype().kind() != 'u' || m.itemsize() != 1)
      throw py::type_error("relu_mask must be uint8 (the bit mask of a fused forward), got " +
                           dtype_name(m));
    const int64_t bytes = relu_mask_bytes(x_arr);
    if (m.ndim() != 1 || m.shape(0) != bytes)
      throw py::value_error("relu_mask must have shape (" + std::to_string(bytes) +
                            ",), one bit per value of x " + shape_string(x_arr) + ", got " +
                            shape_string(m));
    mask = py::module_::import("numpy")
               .attr("ascontiguousarray")(m)  // a copy only when needed
               .cast<py::array>();
  }

  TensorView<const T> y_view() const { return y ? y->view() : TensorView<const T>{}; }
  std::span<const uint8_t> mask_span() const {
    if (y) return {};
    return {static_cast<const uint8_t*>(mask.data()), static_cast<size_t>(mask.size())};
  }
};

// relu: the fused BN+ReLU backward, gated by y or relu_mask.
py::tuple training_backward(py::handle x_obj, py::handle dy, py::handle weight,
                            py::handle save_mean, py::handle save_invstd, bool need_dx,
                            bool need_dweight, bool need_dbias, bool relu, py::handle y,
                            py::handle relu_mask) {
  py::array x_arr = x_array(x_obj);
  return dispatch(x_arr, [&](auto zero) -> py::tuple {
    using T = decltype(zero);
    BackwardCall<T> call(x_arr, dy, need_dx, need_dweight, need_dbias);
    std::optional<ReluGate<T>> gate;
    if (relu) gate.emplace(x_arr, call.x.layout, y, relu_mask);
    py::array keep_w, keep_m, keep_s;
    const auto w = channel_input<T>(weight, "weight", call.c, keep_w);
    if (save_mean.is_none() || save_invstd.is_none())
      throw py::value_error("save_mean and save_invstd (from the training forward) are required");
    const auto sm = channel_input<T>(save_mean, "save_mean", call.c, keep_m);
    const auto si = channel_input<T>(save_invstd, "save_invstd", call.c, keep_s);
    {
      py::gil_scoped_release release;
      if (gate)
        bnorm::batch_norm_relu_backward<T>(call.x.view(), gate->y_view(), gate->mask_span(),
                                           call.dy.view(), call.dx_view, w, sm, si,
                                           call.dweight_span, call.dbias_span);
      else
        bnorm::batch_norm_backward<T>(call.x.view(), call.dy.view(), call.dx_view, w, sm, si,
                                      call.dweight_span, call.dbias_span);
    }
    return call.result();
  });
}

py::tuple backward(py::handle x, py::handle dy, py::handle weight, py::handle save_mean,
                   py::handle save_invstd, bool need_dx, bool need_dweight, bool need_dbias) {
  return training_backward(x, dy, weight, save_mean, save_invstd, need_dx, need_dweight,
                           need_dbias, false, py::none(), py::none());
}

py::tuple relu_backward(py::handle x, py::handle dy, py::handle weight, py::handle save_mean,
                        py::handle save_invstd, bool need_dx, bool need_dweight, bool need_dbias,
                        py::handle y, py::handle relu_mask) {
  return training_backward(x, dy, weight, save_mean, save_invstd, need_dx, need_dweight,
                           need_dbias, true, y, relu_mask);
}

// relu: the fused BN+ReLU backward, gated by y or relu_mask.
py::tuple inference_backward(py::handle x_obj, py::handle dy, py::handle weight,
                             py::handle running_mean, py::handle running_var, double eps,
                             bool need_dx, bool need_dweight, bool need_dbias, bool relu,
                             py::handle y, py::handle relu_mask) {
  py::array x_arr = x_array(x_obj);
  return dispatch(x_arr, [&](auto zero) -> py::tuple {
    using T = decltype(zero);
    BackwardCall<T> call(x_arr, dy, need_dx, need_dweight, need_dbias);
    std::optional<ReluGate<T>> gate;
    if (relu) gate.emplace(x_arr, call.x.layout, y, relu_mask);
    py::array keep_w, keep_m, keep_v;
    const auto w = channel_input<T>(weight, "weight", call.c, keep_w);
    if (running_mean.is_none() || running_var.is_none())
      throw py::value_error("running_mean and running_var are required");
    const auto rm = channel_input<T>(running_mean, "running_mean", call.c, keep_m);
    const auto rv = channel_input<T>(running_var, "running_var", call.c, keep_v);
    {
      py::gil_scoped_release release;
      if (gate)
        bnorm::batch_norm_relu_backward_inference<T>(
            call.x.view(), gate->y_view(), gate->mask_span(), call.dy.view(), call.dx_view, w,
            rm, rv, eps, call.dweight_span, call.dbias_span);
      else
        bnorm::batch_norm_backward_inference<T>(call.x.view(), call.dy.view(), call.dx_view, w,
                                                rm, rv, eps, call.dweight_span, call.dbias_span);
    }
    return call.result();
  });
}

py::tuple backward_inference(py::handle x, py::handle dy, py::handle weight,
                             py::handle running_mean, py::handle running_var, double eps,
                             bool need_dx, bool need_dweight, bool need_dbias) {
  return inference_backward(x, dy, weight, running_mean, running_var, eps, need_dx,
                            need_dweight, need_dbias, false, py::none(), py::none());
}

py::tuple relu_backward_inference(py::handle x, py::handle dy, py::handle weight,
                                  py::handle running_mean, py::handle running_var, double eps,
                                  bool need_dx, bool need_dweight, bool need_dbias, py::handle y,
                                  py::handle relu_mask) {
  return inference_backward(x, dy, weight, running_mean, running_var, eps, need_dx,
                            need_dweight, need_dbias, true, y, relu_mask);
}

}  // namespace

namespace bnorm::python {
void bind_batch_norm_module(py::module_& m);  // module.cpp
void bind_norm_functional(py::module_& m);    // norm_functional.cpp
void bind_norm_modules(py::module_& m);       // norm_modules.cpp
void bind_fold(py::module_& m);               // fold.cpp
}  // namespace bnorm::python

PYBIND11_MODULE(_bnorm, m) {
  m.doc() = "bnorm native bindings; use the bnorm package (functional API and modules)";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const bnorm::Error& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  m.def("forward_training", &forward_training, py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("running_mean"), py::arg("running_var"), py::arg("momentum"), py::arg("eps"),
        py::arg("running_var_estimator") = "unbiased", py::kw_only(),
        py::arg("num_batches_tracked") = py::none(),
        "Training forward: returns (y, save_mean, save_invstd); running buffers (numpy arrays "
        "or None) are updated in place with factor `momentum`, or with momentum=None the "
        "cumulative average's 1 / (num_batches_tracked + 1). num_batches_tracked (None or a "
        "0-d int64 array) is checked (>= 0, < INT64_MAX) and incremented after success.");
  m.def("forward_inference", &forward_inference, py::arg("x"), py::arg("weight"),
        py::arg("bias"), py::arg("running_mean"), py::arg("running_var"), py::arg("eps"),
        "Inference forward with running statistics: returns y.");
  m.def("backward", &backward, py::arg("x"), py::arg("dy"), py::arg("weight"),
        py::arg("save_mean"), py::arg("save_invstd"), py::arg("need_dx") = true,
        py::arg("need_dweight") = true, py::arg("need_dbias") = true,
        "Backward of the training forward: returns (dx, dweight, dbias), None where not needed.");
  m.def("backward_inference", &backward_inference, py::arg("x"), py::arg("dy"),
        py::arg("weight"), py::arg("running_mean"), py::arg("running_var"), py::arg("eps"),
        py::arg("need_dx") = true, py::arg("need_dweight") = true, py::arg("need_dbias") = true,
        "Backward of the inference forward (statistics fixed): returns (dx, dweight, dbias).");
  m.def("relu_forward_training", &relu_forward_training, py::arg("x"), py::arg("weight"),
        py::arg("bias"), py::arg("running_mean"), py::arg("running_var"), py::arg("momentum"),
        py::arg("eps"), py::arg("running_var_estimator") = "unbiased",
        py::arg("return_mask") = false, py::kw_only(),
        py::arg("num_batches_tracked") = py::none(),
        "Fused training forward, y = max(bn(x), 0): returns (y, save_mean, save_invstd), or "
        "(y, save_mean, save_invstd, relu_mask) when return_mask; running buffers, momentum "
        "and num_batches_tracked as forward_training.");
  m.def("relu_forward_inference", &relu_forward_inference, py::arg("x"), py::arg("weight"),
        py::arg("bias"), py::arg("running_mean"), py::arg("running_var"), py::arg("eps"),
        py::arg("return_mask") = false,
        "Fused inference forward, y = max(bn(x), 0): returns y, or (y, relu_mask) when "
        "return_mask.");
  m.def("relu_backward", &relu_backward, py::arg("x"), py::arg("dy"), py::arg("weight"),
        py::arg("save_mean"), py::arg("save_invstd"), py::arg("need_dx") = true,
        py::arg("need_dweight") = true, py::arg("need_dbias") = true, py::kw_only(),
        py::arg("y") = py::none(), py::arg("relu_mask") = py::none(),
        "Backward of the fused training forward, dy = d loss / d y, gated by exactly one of "
        "y and relu_mask: returns (dx, dweight, dbias), None where not needed.");
  m.def("relu_backward_inference", &relu_backward_inference, py::arg("x"), py::arg("dy"),
        py::arg("weight"), py::arg("running_mean"), py::arg("running_var"), py::arg("eps"),
        py::arg("need_dx") = true, py::arg("need_dweight") = true, py::arg("need_dbias") = true,
        py::kw_only(), py::arg("y") = py::none(), py::arg("relu_mask") = py::none(),
        "Backward of the fused inference forward (statistics fixed), gated by exactly one of "
        "y and relu_mask: returns (dx, dweight, dbias).");
  bnorm::python::bind_batch_norm_module(m);
  bnorm::python::bind_norm_functional(m);
  bnorm::python::bind_norm_modules(m);
  bnorm::python::bind_fold(m);
  m.def("set_num_threads", &bnorm::set_num_threads, py::arg("n"),
        "Threads for every call; n <= 0 restores the default. Results do not depend on it.");
  m.def("get_num_threads", &bnorm::get_num_threads);
  m.def("kernel_isa", &bnorm::kernel_isa,
        "The compiled variant of the kernels this CPU runs, e.g. 'x86-64-v4 (AVX-512)'.");
  m.attr("__version__") = bnorm::version();
}
