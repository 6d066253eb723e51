// bnorm._bnorm: numpy bindings of the family's C++ functional API (norms.hpp), for
// python/bnorm/norm_functional.py: layer and RMS norm over the trailing dims, group and
// instance norm over (N, C, *spatial) in either memory layout (arrays.h).
//
// Layer and RMS norm read x row-major: a C-contiguous x is used as it is, any other is
// copied to C order first; outputs are C-contiguous. Group and instance norm run a
// channels-last x without a copy and return outputs in x's layout. Saved statistics come
// back shaped as ATen's: layer/RMS norm x.shape[:-k], group norm (N, G), instance norm
// (N, C); the backwards take them in any shape holding that many values. dtype errors are
// TypeErrors, the C++ front-end's (bnorm::Error) ValueErrors naming the argument.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <bnorm/norms.hpp>

#include <optional>
#include <span>
#include <string>
#include <vector>

#include "arrays.h"
#include "norm_arrays.h"

namespace bnorm::python {
namespace {

// ---- layer norm and RMS norm: (rows, prod(normalized_shape)) ----------------------------

py::tuple layer_norm_forward(py::handle x_obj, const std::vector<int64_t>& normalized_shape,
                             py::handle weight, py::handle bias, double eps) {
  const py::array x_arr = x_array(x_obj);
  return dispatch(x_arr, [&](auto zero) -> py::tuple {
    using T = decltype(zero);
    const RowMajor<T> x(x_arr, "x");
    py::array keep_w, keep_b;
    const auto w = shaped_input<T>(weight, "weight", normalized_shape, keep_w);
    const auto b = shaped_input<T>(bias, "bias", normalized_shape, keep_b);
    py::array y = py::array_t<T>(std::vector<py::ssize_t>(x.sizes.begin(), x.sizes.end()));
    py::object mean, rstd;
    const auto leading = leading_shape(x.sizes, normalized_shape.size());
    const auto sm = shaped_output<T>(mean, leading), sr = shaped_output<T>(rstd, leading);
    {
      py::gil_scoped_release release;
      bnorm::layer_norm_forward<T>(x.view(), mutable_view<T>(y, Layout::channels_first),
                                   normalized_shape, w, b, eps, sm, sr);
    }
    return py::make_tuple(y, mean, rstd);
  });
}

py::tuple layer_norm_backward(py::handle x_obj, py::handle dy_obj,
                              const std::vector<int64_t>& normalized_shape, py::handle weight,
                              py::handle save_mean, py::handle save_rstd, bool need_dx,
                              bool need_dweight, bool need_dbias) {
  const py::array x_arr = x_array(x_obj);
  return dispatch(x_arr, [&](auto zero) -> py::tuple {
    using T = decltype(zero);
    const RowMajor<T> x(x_arr, "x");
    const RowMajor<T> dy(same_shape_input<T>(dy_obj, "dy", x_arr), "dy");
    const int64_t rows = leading_count(x.sizes, normalized_shape.size());
    py::array keep_w, keep_m, keep_r;
    const auto w = shaped_input<T>(weight, "weight", normalized_shape, keep_w);
    const auto sm = saved_input<T>(save_mean, "save_mean", rows, keep_m);
    const auto sr = saved_input<T>(save_rstd, "save_rstd", rows, keep_r);
    py::object dx = py::none(), dweight = py::none(), dbias = py::none();
    TensorView<T> dx_view{};
    if (need_dx) {
      py::array out = py::array_t<T>(std::vector<py::ssize_t>(x.sizes.begin(), x.sizes.end()));
      dx_view = mutable_view<T>(out, Layout::channels_first);
      dx = out;
    }
    const auto dw = need_dweight ? shaped_output<T>(dweight, normalized_shape) : std::span<T>();
    const auto db = need_dbias ? shaped_output<T>(dbias, normalized_shape) : std::span<T>();
    {
      py::gil_scoped_release release;
      bnorm::layer_norm_backward<T>(x.view(), dy.view(), dx_view, normalized_shape, w, sm, sr,
                                    dw, db);
    }
    return py::make_tuple(dx, dweight, dbias);
  });
}

py::tuple rms_norm_forward(py::handle x_obj, const std::vector<int64_t>& normalized_shape,
                           py::handle weight, std::optional<double> eps) {
  const py::array x_arr = x_array(x_obj);
  return dispatch(x_arr, [&](auto zero) -> py::tuple {
    using T = decltype(zero);
    const RowMajor<T> x(x_arr, "x");
    py::array keep_w;
    const auto w = shaped_input<T>(weight, "weight", normalized_shape, keep_w);
    py::array y = py::array_t<T>(std::vector<py::ssize_t>(x.sizes.begin(), x.sizes.end()));
    py::object rstd;
    const auto sr = shaped_output<T>(rstd, leading_shape(x.sizes, normalized_shape.size()));
    {
      py::gil_scoped_release release;
      bnorm::rms_norm_forward<T>(x.view(), mutable_view<T>(y, Layout::channels_first),
                                 normalized_shape, w, eps, sr);
    }
    return py::make_tuple(y, rstd);
  });
}

py::tuple rms_norm_backward(py::handle x_obj, py::handle dy_obj,
                            const std::vector<int64_t>& normalized_shape, py::handle weight,
                            py::handle save_rstd, bool need_dx, bool need_dweight) {
  const py::array x_arr = x_array(x_obj);
  return dispatch(x_arr, [&](auto zero) -> py::tuple {
    using T = decltype(zero);
    const RowMajor<T> x(x_arr, "x");
    const RowMajor<T> dy(same_shape_input<T>(dy_obj, "dy", x_arr), "dy");
    const int64_t rows = leading_count(x.sizes, normalized_shape.size());
    py::array keep_w, keep_r;
    const auto w = shaped_input<T>(weight, "weight", normalized_shape, keep_w);
    const auto sr = saved_input<T>(save_rstd, "save_rstd", rows, keep_r);
    py::object dx = py::none(), dweight = py::none();
    TensorView<T> dx_view{};
    if (need_dx) {
      py::array out = py::array_t<T>(std::vector<py::ssize_t>(x.sizes.begin(), x.sizes.end()));
      dx_view = mutable_view<T>(out, Layout::channels_first);
      dx = out;
    }
    const auto dw = need_dweight ? shaped_output<T>(dweight, normalized_shape) : std::span<T>();
    {
      py::gil_scoped_release release;
      bnorm::rms_norm_backward<T>(x.view(), dy.view(), dx_view, normalized_shape, w, sr, dw);
    }
    return py::make_tuple(dx, dweight);
  });
}

// ---- group norm and instance norm: (N, C, *spatial), either layout ----------------------

py::tuple group_norm_forward(py::handle x_obj, int64_t groups, py::handle weight,
                             py::handle bias, double eps) {
  const py::array x_arr = x_array(x_obj);
  return dispatch(x_arr, [&](auto zero) -> py::tuple {
    using T = decltype(zero);
    const Tensor<T> x = tensor_input<T>(x_arr, "x", std::nullopt);
    const int64_t n = x_arr.shape(0), c = x_arr.shape(1);
    py::array keep_w, keep_b;
    const auto w = channel_input<T>(weight, "weight", c, keep_w);
    const auto b = channel_input<T>(bias, "bias", c, keep_b);
    py::array y = empty_like_layout<T>(sizes_of(x_arr), x.layout);
    py::object mean, rstd;
    const std::vector<int64_t> stats{n, groups > 0 ? groups : 0};
    const auto sm = shaped_output<T>(mean, stats), sr = shaped_output<T>(rstd, stats);
    {
      py::gil_scoped_release release;
      bnorm::group_norm_forward<T>(x.view(), mutable_view<T>(y, x.layout), groups, w, b, eps,
                                   sm, sr);
    }
    return py::make_tuple(y, mean, rstd);
  });
}

py::tuple group_norm_backward(py::handle x_obj, py::handle dy, int64_t groups,
                              py::handle weight, py::handle save_mean, py::handle save_rstd,
                              bool need_dx, bool need_dweight, bool need_dbias) {
  const py::array x_arr = x_array(x_obj);
  return dispatch(x_arr, [&](auto zero) -> py::tuple {
    using T = decltype(zero);
    BackwardCall<T> call(x_arr, dy, need_dx, need_dweight, need_dbias);
    const int64_t count = x_arr.shape(0) * (groups > 0 ? groups : 0);
    py::array keep_w, keep_m, keep_r;
    const auto w = channel_input<T>(weight, "weight", call.c, keep_w);
    const auto sm = saved_input<T>(save_mean, "save_mean", count, keep_m);
    const auto sr = saved_input<T>(save_rstd, "save_rstd", count, keep_r);
    {
      py::gil_scoped_release release;
      bnorm::group_norm_backward<T>(call.x.view(), call.dy.view(), call.dx_view, groups, w, sm,
                                    sr, call.dweight_span, call.dbias_span);
    }
    return call.result();
  });
}

// Instance norm with the input's statistics; running_mean / running_var (None or arrays
// updated in place) with PyTorch's rule. Its backward is group_norm_backward with G = C,
// and with running statistics it is batch norm's inference pair (bindings.cpp).
py::tuple instance_norm_forward_training(py::handle x_obj, py::handle weight, py::handle bias,
                                         py::handle running_mean, py::handle running_var,
                                         double momentum, double eps) {
  const py::array x_arr = x_array(x_obj);
  return dispatch(x_arr, [&](auto zero) -> py::tuple {
    using T = decltype(zero);
    const Tensor<T> x = tensor_input<T>(x_arr, "x", std::nullopt);
    const int64_t n = x_arr.shape(0), c = x_arr.shape(1);
    py::array keep_w, keep_b;
    const auto w = channel_input<T>(weight, "weight", c, keep_w);
    const auto b = channel_input<T>(bias, "bias", c, keep_b);
    const auto rm = channel_buffer<T>(running_mean, "running_mean", c);
    const auto rv = channel_buffer<T>(running_var, "running_var", c);
    py::array y = empty_like_layout<T>(sizes_of(x_arr), x.layout);
    py::object mean, rstd;
    const std::vector<int64_t> stats{n, c};
    const auto sm = shaped_output<T>(mean, stats), sr = shaped_output<T>(rstd, stats);
    {
      py::gil_scoped_release release;
      bnorm::instance_norm_forward_training<T>(x.view(), mutable_view<T>(y, x.layout), w, b,
                                               eps, momentum, rm, rv, sm, sr);
    }
    return py::make_tuple(y, mean, rstd);
  });
}

}  // namespace

void bind_norm_functional(py::module_& m) {
  m.def("layer_norm_forward", &layer_norm_forward, py::arg("x"), py::arg("normalized_shape"),
        py::arg("weight"), py::arg("bias"), py::arg("eps"),
        "Layer norm over x's trailing normalized_shape: returns (y, save_mean, save_rstd).");
  m.def("layer_norm_backward", &layer_norm_backward, py::arg("x"), py::arg("dy"),
        py::arg("normalized_shape"), py::arg("weight"), py::arg("save_mean"),
        py::arg("save_rstd"), py::arg("need_dx"), py::arg("need_dweight"),
        py::arg("need_dbias"), "Returns (dx, dweight, dbias), None where not needed.");
  m.def("rms_norm_forward", &rms_norm_forward, py::arg("x"), py::arg("normalized_shape"),
        py::arg("weight"), py::arg("eps"),
        "RMS norm over x's trailing normalized_shape (eps None: the dtype's machine "
        "epsilon): returns (y, save_rstd).");
  m.def("rms_norm_backward", &rms_norm_backward, py::arg("x"), py::arg("dy"),
        py::arg("normalized_shape"), py::arg("weight"), py::arg("save_rstd"),
        py::arg("need_dx"), py::arg("need_dweight"),
        "Returns (dx, dweight), None where not needed.");
  m.def("group_norm_forward", &group_norm_forward, py::arg("x"), py::arg("groups"),
        py::arg("weight"), py::arg("bias"), py::arg("eps"),
        "Group norm of (N, C, *spatial): returns (y, save_mean, save_rstd), stats (N, G).");
  m.def("group_norm_backward", &group_norm_backward, py::arg("x"), py::arg("dy"),
        py::arg("groups"), py::arg("weight"), py::arg("save_mean"), py::arg("save_rstd"),
        py::arg("need_dx"), py::arg("need_dweight"), py::arg("need_dbias"),
        "Returns (dx, dweight, dbias), None where not needed.");
  m.def("instance_norm_forward_training", &instance_norm_forward_training, py::arg("x"),
        py::arg("weight"), py::arg("bias"), py::arg("running_mean"), py::arg("running_var"),
        py::arg("momentum"), py::arg("eps"),
        "Instance norm with the input's statistics: returns (y, save_mean, save_rstd), "
        "stats (N, C); running buffers (None or arrays) updated in place.");
}

}  // namespace bnorm::python
