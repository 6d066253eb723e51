// The layer interface of the training engine.
//
// A layer maps an input tensor x to an output y of a shape it can tell in advance
// (output_shape), so the model allocates every activation once per batch shape. The
// backward pass gets x, y and dL/dy, writes dL/dx (unless the caller passes nullptr:
// the first layer's input needs no gradient) and overwrites the gradients of its own
// parameters: nothing accumulates across steps, so there is no zero_grad.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "nn/tensor.h"

namespace bnorm::nn {

// A trainable tensor: its values, and the gradient the last backward wrote.
template <class T>
struct Parameter {
  std::string name;  // "3.weight": the layer's index in its model, then the field
  Shape shape;
  std::span<T> value;
  std::span<const T> grad;
};

// State that is saved and restored but not trained: BN running statistics, and
// integer counters (BN's num_batches_tracked, dropout's draw counter).
template <class T>
struct Buffer {
  std::string name;
  Shape shape;
  std::span<T> value;
};

struct Counter {
  std::string name;
  std::function<int64_t()> get;
  std::function<void(int64_t)> set;
};

template <class T>
struct StateLists {
  std::vector<Parameter<T>> parameters;
  std::vector<Buffer<T>> buffers;
  std::vector<Counter> counters;
};

template <class T>
class Layer {
 public:
  virtual ~Layer() = default;

  // A one-line description, e.g. "Conv2d(1, 6, kernel_size=5, padding=2)".
  virtual std::string describe() const = 0;

  // The output shape for this input shape; throws std::invalid_argument naming the
  // layer and the expected input when the shape does not fit.
  virtual Shape output_shape(const Shape& input) const = 0;

  // y has been resized to output_shape(x.shape()).
  virtual void forward(const Tensor<T>& x, Tensor<T>& y) = 0;

  // x and y are the input and output of the last forward, unchanged since (layers may
  // keep what they derived from x, e.g. Conv2d's columns); dy has y's shape; dx (when
  // not null) has been resized to x's shape.
  virtual void backward(const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>& dy,
                        Tensor<T>* dx) = 0;

  // Appends this layer's parameters, buffers and counters, names prefixed by `prefix`
  // (the layer's index and a dot).
  virtual void collect_state(StateLists<T>& /*out*/, const std::string& /*prefix*/) {}

  virtual void set_training(bool training) { training_ = training; }
  bool is_training() const { return training_; }

 protected:
  bool training_ = true;
};

}  // namespace bnorm::nn
