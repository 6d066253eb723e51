// A model as a chain of layers. It owns every activation and every gradient tensor,
// sized from the layers' output shapes on each batch and reused: after the first
// batch of a given size, forward and backward allocate nothing.
//
//   forward:  a_0 = x,  a_{i+1} = layer_i(a_i); returns the last a
//   backward: g_L = dL/da_L (given),  g_i = layer_i.backward(a_i, a_{i+1}, g_{i+1});
//             the first layer gets no dx (the input needs no gradient)
// State is named like PyTorch's nn.Sequential state_dict: "<index>.<field>".
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "nn/layer.h"

namespace bnorm::nn {

// Wall time per layer, summed over the calls made while it is attached to a model
// (Sequential::attach_profile): index i is layer i. Each layer's parallel regions end
// before it returns, so its time is its own.
struct LayerProfile {
  std::vector<double> forward_seconds, backward_seconds;
  int64_t forwards = 0, backwards = 0;  // model calls timed
};

template <class T>
class Sequential {
 public:
  Sequential() = default;
  Sequential(const Sequential&) = delete;
  Sequential& operator=(const Sequential&) = delete;

  Layer<T>& add(std::unique_ptr<Layer<T>> layer);
  template <class L, class... Args>
  L& emplace(Args&&... args) {
    auto layer = std::make_unique<L>(std::forward<Args>(args)...);
    L& ref = *layer;
    add(std::move(layer));
    return ref;
  }

  // x must stay alive and unchanged until backward has run.
  const Tensor<T>& forward(const Tensor<T>& x);
  // dy: the loss gradient with respect to the last forward's output.
  void backward(const Tensor<T>& dy);

  // From now on time every layer's forward and backward into `profile` (resized to the
  // model); nullptr stops. Off, it costs one pointer test per call.
  void attach_profile(LayerProfile* profile);

  void set_training(bool training);
  bool is_training() const { return training_; }

  // Throws std::invalid_argument naming the first layer that rejects the shape.
  Shape output_shape(const Shape& input) const;

  StateLists<T> state();
  int64_t parameter_count();
  std::string describe() const;  // one layer per line
  size_t size() const { return layers_.size(); }
  Layer<T>& layer(size_t i) { return *layers_[i]; }
  const Layer<T>& layer(size_t i) const { return *layers_[i]; }

  // Rewrites for inference (src/deploy/model_folding.h): layer i swapped for another
  // (returns the old one), or removed. State names then follow the new indices, and
  // backward needs a new forward first.
  std::unique_ptr<Layer<T>> replace(size_t i, std::unique_ptr<Layer<T>> layer);
  void erase(size_t i);
  void insert(size_t i, std::unique_ptr<Layer<T>> layer);  // before layer i (i = size(): last)

  // Layer i's output in the last forward (calibration reads them).
  const Tensor<T>& output(size_t i) const { return outputs_[i]; }

  // Copies every parameter, buffer and counter of `from`, a model of the same layers
  // (same state names and sizes; std::invalid_argument naming the first difference
  // otherwise, before anything changes).
  void copy_state_from(Sequential& from);

  // Changes whenever a layer is added, replaced, erased or inserted: whoever holds spans
  // into the layers' state (ReplicaEvaluator) knows they are stale.
  uint64_t structure_version() const { return structure_; }

 private:
  std::vector<std::unique_ptr<Layer<T>>> layers_;
  std::vector<Tensor<T>> outputs_;    // outputs_[i]: layer i's output
  std::vector<Tensor<T>> gradients_;  // gradients_[i]: dL/d(layer i's input), i >= 1
  const Tensor<T>* input_ = nullptr;
  bool training_ = true;
  LayerProfile* profile_ = nullptr;
  uint64_t structure_ = 0;  // bumped by add, replace, erase, insert
};

extern template class Sequential<float>;
extern template class Sequential<double>;

}  // namespace bnorm::nn
