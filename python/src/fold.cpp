// bnorm._bnorm.fold_batch_norm: batch norm folded into the conv or linear layer before it,
// over numpy arrays (bnorm.hpp's fold_batch_norm, computed in double):
//   s = gamma / sqrt(running_var + eps)
//   weight'[c, ...] = weight[c, ...] * s[c],   bias'[c] = (bias[c] - running_mean[c]) * s[c] + beta[c]
// weight: (out_channels, ...) of dtype float32 or float64, any memory order (read as C
// order); bias, gamma, beta: None (0, 1, 0) or one value per output channel. Returns new
// C-order arrays (weight', bias') of weight's dtype. Wrong dtypes are TypeErrors, wrong
// shapes and values (eps < 0 or NaN, var + eps <= 0) ValueErrors naming the argument; a
// NaN statistic makes its own output channel NaN (as in C++).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <bnorm/bnorm.hpp>

#include <span>
#include <string>
#include <vector>

#include "arrays.h"
#include "norm_arrays.h"

namespace bnorm::python {
namespace {

// One value per output channel of weight: None -> empty span (unless required).
template <class T>
std::span<const T> per_output_channel(py::handle obj, const char* name, int64_t channels,
                                      bool required, py::array& keep) {
  if (obj.is_none()) {
    if (required) throw py::value_error(std::string(name) + " is required (one value per output channel)");
    return {};
  }
  py::array a = as_numpy(obj, name);
  if (!py::isinstance<py::array_t<T>>(a) || dtype_char(a) != 'f')
    throw py::type_error(std::string(name) + " must be " + type_name<T>() + " like weight, got " +
                         dtype_name(a));
  if (a.ndim() != 1 || a.shape(0) != channels)
    throw py::value_error(std::string(name) + " must have shape (" + std::to_string(channels) +
                          ",), one value per output channel of weight, got " + shape_string(a));
  keep = c_contiguous(a);
  return {static_cast<const T*>(keep.data()), static_cast<size_t>(channels)};
}

py::tuple fold_batch_norm(py::handle weight_obj, py::handle bias, py::handle running_mean,
                          py::handle running_var, py::handle gamma, py::handle beta,
                          double eps) {
  py::array weight = as_numpy(weight_obj, "weight");
  if (!py::isinstance<py::array_t<float>>(weight) && !py::isinstance<py::array_t<double>>(weight))
    throw py::type_error("weight must be float32 or float64 (native byte order), got " +
                         dtype_name(weight));
  if (weight.ndim() < 1)
    throw py::value_error("weight must have at least 1 dim (output channels first), got shape " +
                          shape_string(weight));
  return dispatch(weight, [&](auto zero) -> py::tuple {
    using T = decltype(zero);
    const py::array w = c_contiguous(weight);
    const int64_t channels = w.shape(0);
    py::array keep_b, keep_m, keep_v, keep_g, keep_beta;
    const auto b = per_output_channel<T>(bias, "bias", channels, false, keep_b);
    const auto m = per_output_channel<T>(running_mean, "running_mean", channels, true, keep_m);
    const auto v = per_output_channel<T>(running_var, "running_var", channels, true, keep_v);
    const auto g = per_output_channel<T>(gamma, "gamma", channels, false, keep_g);
    const auto be = per_output_channel<T>(beta, "beta", channels, false, keep_beta);
    py::array folded_w = py::array_t<T>(std::vector<py::ssize_t>(w.shape(), w.shape() + w.ndim()));
    py::array_t<T> folded_b(channels);
    {
      py::gil_scoped_release release;
      bnorm::fold_batch_norm<T>({static_cast<const T*>(w.data()), sizes_of(w)}, b, m, v, g, be,
                                eps, mutable_view<T>(folded_w, Layout::channels_first),
                                {folded_b.mutable_data(), static_cast<size_t>(channels)});
    }
    return py::make_tuple(folded_w, folded_b);
  });
}

}  // namespace

void bind_fold(py::module_& m) {
  m.def("fold_batch_norm", &fold_batch_norm, py::arg("weight"), py::arg("bias"),
        py::arg("running_mean"), py::arg("running_var"), py::arg("gamma"), py::arg("beta"),
        py::arg("eps"),
        "Batch norm (eval mode) folded into the conv / linear layer before it: returns "
        "(weight', bias'), weight' = weight * s per output channel, bias' = (bias - mean) * s "
        "+ beta, s = gamma / sqrt(running_var + eps), computed in double.");
}

}  // namespace bnorm::python
