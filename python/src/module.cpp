// bnorm._bnorm.BatchNormFloat32 / BatchNormFloat64: the C++ module bnorm::BatchNorm<T>
// over numpy arrays, for python/bnorm/modules.py. The module logic is the C++ module's:
// the mode switch (batch or running statistics, update or not), the momentum and the
// cumulative average, what forward saves for backward, the checks of x's channels and
// of the settings, and the resets. The Python classes add PyTorch's names, the checks of
// Python types and ranks, and state_dict.
//
// The parameters and buffers are numpy arrays the Python module owns (an assigned array
// is used in place): hold_state() points the C++ module at them (BatchNorm::use_state).
// Every call checks them again, so an array reshaped in place since is refused, not
// misread, and a call that writes one (a training forward, a reset) refuses it when
// it has been made read-only, before anything is written.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <bnorm/bnorm.hpp>
#include <bnorm/sync_batch_norm.hpp>

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>

#include "arrays.h"

namespace bnorm::python {
namespace {

std::string type_of(py::handle obj) { return py::str(obj.get_type().attr("__name__")); }

// One of the module's per-channel arrays: None -> empty span; else a 1-D, contiguous,
// aligned numpy array of C values of dtype T (read-only is fine until a call writes it).
template <class T>
std::span<T> state_span(py::handle obj, const char* name, int64_t channels) {
  if (obj.is_none()) return {};
  if (!py::isinstance<py::array_t<T>>(obj) ||
      py::reinterpret_borrow<py::array>(obj).dtype().kind() != 'f')
    throw py::type_error(std::string(name) + " must be a " + type_name<T>() +
                         " numpy array (it is used in place), got " + type_of(obj));
  auto a = py::reinterpret_borrow<py::array>(obj);
  if (a.ndim() != 1 || a.shape(0) != channels)
    throw py::value_error(std::string(name) + " must have shape (" + std::to_string(channels) +
                          ",), got " + shape_string(a));
  if (!(a.flags() & py::array::c_style) || !is_aligned(a))
    throw py::value_error(std::string(name) +
                          " must be a contiguous, aligned array (it is used in place)");
  return {static_cast<T*>(const_cast<void*>(a.data())), static_cast<size_t>(channels)};
}

// The module's batch counter: None, or an aligned 0-d int64 array.
int64_t* state_counter(py::handle obj) {
  if (obj.is_none()) return nullptr;
  if (!py::isinstance<py::array_t<int64_t>>(obj) ||
      py::reinterpret_borrow<py::array>(obj).dtype().kind() != 'i')
    throw py::type_error("num_batches_tracked must be a 0-d int64 numpy array (it is used "
                         "in place), got " + type_of(obj));
  auto a = py::reinterpret_borrow<py::array>(obj);
  if (a.ndim() != 0 || !is_aligned(a))
    throw py::value_error("num_batches_tracked must be an aligned 0-d int64 array (it is "
                          "used in place), got shape " + shape_string(a));
  return static_cast<int64_t*>(const_cast<void*>(a.data()));
}

// A bnorm_collective over a Python object (python/bnorm/sync.py: MPICollective over
// mpi4py, or the user's own) with `rank`, `size`, `allgather(send, recv)` and
// `allreduce_sum(values)` on float64 numpy arrays: SyncBN's C++ calls it with the GIL
// released, so each callback takes the GIL back. A Python exception in a callback
// becomes the callback's failure code, and its message is kept for the error raised.
class PythonCollective {
 public:
  explicit PythonCollective(py::object adapter) : adapter_(std::move(adapter)) {
    collective_ = bnorm_collective{this, adapter_.attr("rank").cast<int>(),
                                   adapter_.attr("size").cast<int>(), &allgather, &allreduce};
  }
  const bnorm_collective& collective() const { return collective_; }
  const py::object& adapter() const { return adapter_; }
  // The last callback's Python exception, taken (empty when none).
  std::string take_error() { return std::exchange(error_, {}); }

 private:
  static py::array view(const double* data, int64_t count, bool writable) {
    // No copy: the callee sees the library's own buffer while the call lasts.
    py::array a(py::dtype::of<double>(), {static_cast<py::ssize_t>(count)}, {sizeof(double)},
                data, py::capsule(data, [](void*) {}));
    if (!writable) a.attr("setflags")(py::arg("write") = false);
    return a;
  }
  template <class... Arrays>
  int call(const char* method, Arrays... arrays) {
    try {
      adapter_.attr(method)(arrays...);
      return 0;
    } catch (py::error_already_set& e) {
      error_ = std::string(method) + " raised " + e.what();
      return 1;
    }
  }
  static int allgather(void* self, const double* send, double* recv, int64_t count) {
    py::gil_scoped_acquire gil;
    auto* me = static_cast<PythonCollective*>(self);
    return me->call("allgather", view(send, count, false),
                    view(recv, count * me->collective_.size, true));
  }
  static int allreduce(void* self, double* values, int64_t count) {
    py::gil_scoped_acquire gil;
    return static_cast<PythonCollective*>(self)->call("allreduce_sum", view(values, count, true));
  }

  py::object adapter_;
  bnorm_collective collective_{};
  std::string error_;
};

template <class T>
class Module {
 public:
  Module(int64_t num_features, double eps, std::optional<double> momentum, bool affine,
         bool track_running_stats, const std::string& running_var_estimator)
      : module_(num_features, BatchNormOptions{eps, momentum, affine, track_running_stats,
                                               running_var_of(running_var_estimator)}) {}

  // The arrays that are the module's state from now on (None where it has none).
  void hold_state(py::object weight, py::object bias, py::object running_mean,
                  py::object running_var, py::object num_batches_tracked) {
    point_at(weight, bias, running_mean, running_var, num_batches_tracked);
    weight_ = std::move(weight);
    bias_ = std::move(bias);
    running_mean_ = std::move(running_mean);
    running_var_ = std::move(running_var);
    num_batches_tracked_ = std::move(num_batches_tracked);
  }

  // y = BN(x) in x's memory layout (x as the Python module checked it: rank, dtype).
  py::array forward(py::handle x_obj) {
    const py::array x_arr = x_array(x_obj);
    require_module_dtype(x_arr, "x");
    const Tensor<T> x = tensor_input<T>(x_arr, "x", std::nullopt);
    point_again();
    if (module_.updates_running_stats()) require_running_stats_writable();
    py::array y = empty_like_layout<T>(sizes_of(x_arr), x.layout);
    const TensorView<T> y_view{static_cast<T*>(y.mutable_data()), sizes_of(y), x.layout};
    run_reporting_callbacks([&] { module_.forward(x.view(), y_view); });
    return y;
  }

  // (dx, grad_weight, grad_bias) of the last forward, whose input was x; the grads are
  // new arrays (None without affine).
  py::tuple backward(py::handle x_obj, py::handle dy) {
    const py::array x_arr = x_array(x_obj);
    require_module_dtype(x_arr, "x");
    BackwardCall<T> call(x_arr, dy, true, false, false);
    point_again();
    run_reporting_callbacks([&] { module_.backward(call.x.view(), call.dy.view(), call.dx_view); });
    py::object grad_weight = py::none(), grad_bias = py::none();
    if (module_.options().affine) {
      grad_weight = copy_of(module_.grad_weight());
      grad_bias = copy_of(module_.grad_bias());
    }
    return py::make_tuple(call.dx, grad_weight, grad_bias);
  }

  void reset_running_stats() {
    point_again();
    require_running_stats_writable();
    module_.reset_running_stats();
  }

  void reset_parameters() {
    point_again();
    require_running_stats_writable();
    channel_buffer<T>(weight_, "weight", module_.num_features());
    channel_buffer<T>(bias_, "bias", module_.num_features());
    module_.reset_parameters();
  }

  void set_num_batches_tracked(int64_t count) {
    point_again();
    counter_buffer(num_batches_tracked_);
    module_.set_num_batches_tracked(count);
  }

  BatchNorm<T>& module() { return module_; }

  // SyncBN over `adapter` (PythonCollective); None: this process alone again.
  void synchronize(py::object adapter) {
    std::unique_ptr<PythonCollective> next;
    if (!adapter.is_none()) next = std::make_unique<PythonCollective>(std::move(adapter));
    module_.synchronize(next ? &next->collective() : nullptr);
    collective_ = std::move(next);
  }
  py::object collective() const { return collective_ ? collective_->adapter() : py::none(); }

  static void bind(py::module_& m, const char* name) {
    py::class_<Module>(m, name, "bnorm::BatchNorm<T> over numpy arrays (python/bnorm/modules.py)")
        .def(py::init<int64_t, double, std::optional<double>, bool, bool, const std::string&>(),
             py::arg("num_features"), py::arg("eps"), py::arg("momentum"), py::arg("affine"),
             py::arg("track_running_stats"), py::arg("running_var_estimator"))
        .def("hold_state", &Module::hold_state, py::arg("weight"), py::arg("bias"),
             py::arg("running_mean"), py::arg("running_var"), py::arg("num_batches_tracked"))
        .def("forward", &Module::forward, py::arg("x"))
        .def("backward", &Module::backward, py::arg("x"), py::arg("dy"))
        .def("reset_running_stats", &Module::reset_running_stats)
        .def("reset_parameters", &Module::reset_parameters)
        .def("set_num_batches_tracked", &Module::set_num_batches_tracked, py::arg("count"))
        .def("synchronize", &Module::synchronize, py::arg("collective"))
        .def_property_readonly("collective", &Module::collective)
        .def_property(
            "training", [](Module& self) { return self.module().is_training(); },
            [](Module& self, bool mode) { self.module().train(mode); })
        .def_property(
            "eps", [](Module& self) { return self.module().options().eps; },
            [](Module& self, double eps) { self.module().set_eps(eps); })
        .def_property(
            "momentum", [](Module& self) { return self.module().options().momentum; },
            [](Module& self, std::optional<double> momentum) {
              self.module().set_momentum(momentum);
            })
        .def_property_readonly("num_features",
                               [](Module& self) { return self.module().num_features(); })
        .def_property_readonly("affine",
                               [](Module& self) { return self.module().options().affine; })
        .def_property_readonly(
            "track_running_stats",
            [](Module& self) { return self.module().options().track_running_stats; })
        .def_property_readonly("running_var_estimator", [](Module& self) {
          return self.module().options().running_var == RunningVar::biased ? "biased"
                                                                           : "unbiased";
        });
  }

 private:
  // body() without the GIL; a collective's failure carries its Python exception's text.
  template <class F>
  void run_reporting_callbacks(F&& body) {
    try {
      py::gil_scoped_release release;
      body();
    } catch (const Error& e) {
      const std::string python = collective_ ? collective_->take_error() : "";
      if (e.status() == BNORM_ERROR_COLLECTIVE && !python.empty())
        throw py::value_error(std::string(e.what()) + ": " + python);
      throw;
    }
  }

  void require_module_dtype(const py::array& a, const char* name) const {
    if (!py::isinstance<py::array_t<T>>(a))
      throw py::type_error(std::string(name) + " must be " + type_name<T>() +
                           " (the module's dtype), got " + dtype_name(a));
  }

  void point_at(py::handle weight, py::handle bias, py::handle running_mean,
                py::handle running_var, py::handle num_batches_tracked) {
    const int64_t c = module_.num_features();
    module_.use_state({state_span<T>(weight, "weight", c), state_span<T>(bias, "bias", c),
                       state_span<T>(running_mean, "running_mean", c),
                       state_span<T>(running_var, "running_var", c),
                       state_counter(num_batches_tracked)});
  }

  void point_again() {
    point_at(weight_, bias_, running_mean_, running_var_, num_batches_tracked_);
  }

  // The arrays a training forward or reset_running_stats writes; messages as the
  // functional API's.
  void require_running_stats_writable() {
    channel_buffer<T>(running_mean_, "running_mean", module_.num_features());
    channel_buffer<T>(running_var_, "running_var", module_.num_features());
    counter_buffer(num_batches_tracked_);
  }

  static py::array copy_of(std::span<const T> values) {
    return py::array_t<T>(static_cast<py::ssize_t>(values.size()), values.data());
  }

  BatchNorm<T> module_;
  std::unique_ptr<PythonCollective> collective_;
  py::object weight_ = py::none(), bias_ = py::none(), running_mean_ = py::none(),
             running_var_ = py::none(), num_batches_tracked_ = py::none();
};

}  // namespace

void bind_batch_norm_module(py::module_& m) {
  Module<float>::bind(m, "BatchNormFloat32");
  Module<double>::bind(m, "BatchNormFloat64");
}

}  // namespace bnorm::python
