// bnorm._bnorm.{LayerNorm,RMSNorm,GroupNorm,InstanceNorm}Float{32,64}: the C++ modules of
// norms.hpp over numpy arrays, for python/bnorm/norms.py. The module logic is the C++
// module's: the settings' checks, train/eval and what it switches (InstanceNorm's running
// statistics), what forward saves for backward and the check that backward gets the
// last forward's input, the resets. The Python classes add PyTorch's names, the checks of
// Python types and ranks, and state_dict.
//
// The parameters and buffers live in the C++ module (its std::vectors, sized once at
// construction): weight, bias, running_mean and running_var are numpy views of that
// storage whose base is the bound object, so writing into them writes the module's state
// and they keep it alive. grad_weight / grad_bias come back as copies from backward.
// Layer and RMS norm take x row-major (copied to C order when it is not); group and
// instance norm take (N, C, *spatial) in either layout (arrays.h), outputs in x's layout.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <bnorm/norms.hpp>

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "arrays.h"
#include "norm_arrays.h"

namespace bnorm::python {
namespace {

// Rowwise: layer / RMS norm (trailing dims, row-major); else (N, C, *spatial).
template <class M, class T, bool Rowwise>
class Bound {
 public:
  template <class... Args>
  explicit Bound(Args&&... args) : module_(std::forward<Args>(args)...) {}

  py::array forward(py::handle x_obj) {
    const py::array x_arr = module_input(x_obj);
    if constexpr (Rowwise) {
      const RowMajor<T> x(x_arr, "x");
      py::array y = py::array_t<T>(std::vector<py::ssize_t>(x.sizes.begin(), x.sizes.end()));
      const TensorView<T> y_view = mutable_view<T>(y, Layout::channels_first);
      py::gil_scoped_release release;
      module_.forward(x.view(), y_view);
      return y;
    } else {
      const Tensor<T> x = tensor_input<T>(x_arr, "x", std::nullopt);
      py::array y = empty_like_layout<T>(sizes_of(x_arr), x.layout);
      const TensorView<T> y_view = mutable_view<T>(y, x.layout);
      py::gil_scoped_release release;
      module_.forward(x.view(), y_view);
      return y;
    }
  }

  // (dx, grad_weight, grad_bias) of the last forward, whose input was x; the grads are
  // copies (None where the module has no such parameter).
  py::tuple backward(py::handle x_obj, py::handle dy_obj) {
    const py::array x_arr = module_input(x_obj);
    py::object dx;
    if constexpr (Rowwise) {
      const RowMajor<T> x(x_arr, "x");
      const RowMajor<T> dy(same_shape_input<T>(dy_obj, "dy", x_arr), "dy");
      py::array out = py::array_t<T>(std::vector<py::ssize_t>(x.sizes.begin(), x.sizes.end()));
      const TensorView<T> dx_view = mutable_view<T>(out, Layout::channels_first);
      {
        py::gil_scoped_release release;
        module_.backward(x.view(), dy.view(), dx_view);
      }
      dx = out;
    } else {
      BackwardCall<T> call(x_arr, dy_obj, true, false, false);
      {
        py::gil_scoped_release release;
        module_.backward(call.x.view(), call.dy.view(), call.dx_view);
      }
      dx = call.dx;
    }
    py::object grad_bias = py::none();
    if constexpr (requires(const M& m) { m.grad_bias(); }) grad_bias = copy_of(module_.grad_bias());
    return py::make_tuple(dx, copy_of(module_.grad_weight()), grad_bias);
  }

  M& module() { return module_; }

  // A numpy view of the module's storage (shaped `shape`), kept alive by `self`; None
  // where the module has no such array.
  static py::object view(py::handle self, std::span<T> values, const std::vector<int64_t>& shape) {
    if (values.empty()) return py::none();
    return py::array_t<T>(std::vector<py::ssize_t>(shape.begin(), shape.end()), values.data(),
                          self);
  }

  // The common part of each binding: forward, backward, mode, resets.
  static py::class_<Bound> bind(py::module_& m, const char* name, const char* doc) {
    py::class_<Bound> c(m, name, doc);
    c.def("forward", &Bound::forward, py::arg("x"))
        .def("backward", &Bound::backward, py::arg("x"), py::arg("dy"))
        .def("reset_parameters", [](Bound& self) { self.module().reset_parameters(); })
        .def_property(
            "training", [](Bound& self) { return self.module().is_training(); },
            [](Bound& self, bool mode) { self.module().train(mode); });
    return c;
  }

 private:
  py::array module_input(py::handle x_obj) const {
    const py::array x = x_array(x_obj);
    if (!py::isinstance<py::array_t<T>>(x))
      throw py::type_error(std::string("x must be ") + type_name<T>() +
                           " (the module's dtype), got " + dtype_name(x));
    return x;
  }

  static py::object copy_of(std::span<const T> values) {
    if (values.empty()) return py::none();
    return py::array_t<T>(static_cast<py::ssize_t>(values.size()), values.data());
  }

  M module_;
};

template <class T>
void bind_layer_norm(py::module_& m, const char* name) {
  using B = Bound<LayerNorm<T>, T, true>;
  B::bind(m, name, "bnorm::LayerNorm<T> over numpy arrays (python/bnorm/norms.py)")
      .def(py::init([](std::vector<int64_t> shape, double eps, bool elementwise_affine,
                       bool bias) {
             return std::make_unique<B>(std::move(shape),
                                        LayerNormOptions{eps, elementwise_affine, bias});
           }),
           py::arg("normalized_shape"), py::arg("eps"), py::arg("elementwise_affine"),
           py::arg("bias"))
      .def_property_readonly("weight", [](py::object self) {
        auto& mod = self.cast<B&>().module();
        return B::view(self, mod.weight(), mod.normalized_shape());
      })
      .def_property_readonly("bias", [](py::object self) {
        auto& mod = self.cast<B&>().module();
        return B::view(self, mod.bias(), mod.normalized_shape());
      })
      .def_property_readonly("normalized_shape", [](B& self) { return self.module().normalized_shape(); })
      .def_property("eps", [](B& self) { return self.module().options().eps; },
                    [](B& self, decltype(self.module().options().eps) eps) {
                      self.module().set_eps(eps);
                    })
      .def_property_readonly("elementwise_affine",
                             [](B& self) { return self.module().options().elementwise_affine; })
      .def_property_readonly("has_bias", [](B& self) {
        return self.module().options().elementwise_affine && self.module().options().bias;
      });
}

template <class T>
void bind_rms_norm(py::module_& m, const char* name) {
  using B = Bound<RMSNorm<T>, T, true>;
  B::bind(m, name, "bnorm::RMSNorm<T> over numpy arrays (python/bnorm/norms.py)")
      .def(py::init([](std::vector<int64_t> shape, std::optional<double> eps,
                       bool elementwise_affine) {
             return std::make_unique<B>(std::move(shape), RMSNormOptions{eps, elementwise_affine});
           }),
           py::arg("normalized_shape"), py::arg("eps"), py::arg("elementwise_affine"))
      .def_property_readonly("weight", [](py::object self) {
        auto& mod = self.cast<B&>().module();
        return B::view(self, mod.weight(), mod.normalized_shape());
      })
      .def_property_readonly("normalized_shape", [](B& self) { return self.module().normalized_shape(); })
      .def_property("eps", [](B& self) { return self.module().options().eps; },
                    [](B& self, decltype(self.module().options().eps) eps) {
                      self.module().set_eps(eps);
                    })
      .def_property_readonly("elementwise_affine",
                             [](B& self) { return self.module().options().elementwise_affine; });
}

template <class T>
void bind_group_norm(py::module_& m, const char* name) {
  using B = Bound<GroupNorm<T>, T, false>;
  B::bind(m, name, "bnorm::GroupNorm<T> over numpy arrays (python/bnorm/norms.py)")
      .def(py::init([](int64_t num_groups, int64_t num_channels, double eps, bool affine) {
             return std::make_unique<B>(num_groups, num_channels, GroupNormOptions{eps, affine});
           }),
           py::arg("num_groups"), py::arg("num_channels"), py::arg("eps"), py::arg("affine"))
      .def_property_readonly("weight", [](py::object self) {
        auto& mod = self.cast<B&>().module();
        return B::view(self, mod.weight(), {mod.num_channels()});
      })
      .def_property_readonly("bias", [](py::object self) {
        auto& mod = self.cast<B&>().module();
        return B::view(self, mod.bias(), {mod.num_channels()});
      })
      .def_property_readonly("num_groups", [](B& self) { return self.module().num_groups(); })
      .def_property_readonly("num_channels", [](B& self) { return self.module().num_channels(); })
      .def_property("eps", [](B& self) { return self.module().options().eps; },
                    [](B& self, decltype(self.module().options().eps) eps) {
                      self.module().set_eps(eps);
                    })
      .def_property_readonly("affine", [](B& self) { return self.module().options().affine; });
}

template <class T>
void bind_instance_norm(py::module_& m, const char* name) {
  using B = Bound<InstanceNorm<T>, T, false>;
  auto state = [](std::span<T> (InstanceNorm<T>::*get)()) {
    return [get](py::object self) {
      auto& mod = self.cast<B&>().module();
      return B::view(self, (mod.*get)(), {mod.num_features()});
    };
  };
  B::bind(m, name, "bnorm::InstanceNorm<T> over numpy arrays (python/bnorm/norms.py)")
      .def(py::init([](int64_t num_features, double eps, double momentum, bool affine,
                       bool track_running_stats) {
             return std::make_unique<B>(
                 num_features, InstanceNormOptions{eps, momentum, affine, track_running_stats});
           }),
           py::arg("num_features"), py::arg("eps"), py::arg("momentum"), py::arg("affine"),
           py::arg("track_running_stats"))
      .def("reset_running_stats", [](B& self) { self.module().reset_running_stats(); })
      .def_property_readonly("weight", state(&InstanceNorm<T>::weight))
      .def_property_readonly("bias", state(&InstanceNorm<T>::bias))
      .def_property_readonly("running_mean", state(&InstanceNorm<T>::running_mean))
      .def_property_readonly("running_var", state(&InstanceNorm<T>::running_var))
      .def_property_readonly("num_features", [](B& self) { return self.module().num_features(); })
      .def_property("eps", [](B& self) { return self.module().options().eps; },
                    [](B& self, decltype(self.module().options().eps) eps) {
                      self.module().set_eps(eps);
                    })
      .def_property("momentum", [](B& self) { return self.module().options().momentum; },
                    [](B& self, double momentum) { self.module().set_momentum(momentum); })
      .def_property_readonly("affine", [](B& self) { return self.module().options().affine; })
      .def_property_readonly("track_running_stats",
                             [](B& self) { return self.module().options().track_running_stats; });
}

}  // namespace

void bind_norm_modules(py::module_& m) {
  bind_layer_norm<float>(m, "LayerNormFloat32");
  bind_layer_norm<double>(m, "LayerNormFloat64");
  bind_rms_norm<float>(m, "RMSNormFloat32");
  bind_rms_norm<double>(m, "RMSNormFloat64");
  bind_group_norm<float>(m, "GroupNormFloat32");
  bind_group_norm<double>(m, "GroupNormFloat64");
  bind_instance_norm<float>(m, "InstanceNormFloat32");
  bind_instance_norm<double>(m, "InstanceNormFloat64");
}

}  // namespace bnorm::python
