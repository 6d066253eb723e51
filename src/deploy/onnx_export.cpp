#include "deploy/onnx_export.h"

#include <bnorm/bnorm.hpp>
#include <onnx/onnx_pb.h>

#include <cmath>
#include <cstring>
#include <optional>
#include <span>
#include <type_traits>
#include <variant>
#include <vector>

#include "deploy/onnx_check.h"
#include "nn/activations.h"
#include "nn/batch_norm_layer.h"
#include "nn/channel_affine.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/norm_layers.h"
#include "nn/pooling.h"
#include "nn/reshape.h"

namespace bnorm::deploy {

namespace {

constexpr int kOpset = 13;     // Conv, Gemm, per-channel DequantizeLinear, ReduceMean(axes)
constexpr int kIrVersion = 7;  // the IR version of opset 13

// Appends nodes and initializers to a graph, naming every value uniquely.
class GraphBuilder {
 public:
  explicit GraphBuilder(onnx::GraphProto& graph) : g_(graph) {}

  std::string fresh(const std::string& stem) { return stem + "_" + std::to_string(next_++); }

  template <class T>
  std::string constant(const std::string& stem, std::span<const T> values,
                       const std::vector<int64_t>& dims) {
    onnx::TensorProto* t = g_.add_initializer();
    const std::string name = fresh(stem);
    t->set_name(name);
    t->set_data_type(element_type<T>());
    for (int64_t d : dims) t->add_dims(d);
    t->set_raw_data(std::string(reinterpret_cast<const char*>(values.data()),
                                values.size() * sizeof(T)));  // little-endian, as ONNX's
    return name;
  }
  std::string scalar(const std::string& stem, float v) {
    return constant<float>(stem, std::span<const float>(&v, 1), {});
  }

  onnx::NodeProto& node(const std::string& op, const std::vector<std::string>& inputs,
                        const std::string& output) {
    onnx::NodeProto* n = g_.add_node();
    n->set_op_type(op);
    n->set_name(output);
    for (const auto& in : inputs) n->add_input(in);
    n->add_output(output);
    return *n;
  }
  // One node, its single output named after the op.
  std::string op(const std::string& op, const std::vector<std::string>& inputs) {
    const std::string out = fresh(op);
    node(op, inputs, out);
    return out;
  }

  static void ints(onnx::NodeProto& n, const std::string& name, const std::vector<int64_t>& v) {
    onnx::AttributeProto* a = n.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (int64_t x : v) a->add_ints(x);
  }
  static void integer(onnx::NodeProto& n, const std::string& name, int64_t v) {
    onnx::AttributeProto* a = n.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void real(onnx::NodeProto& n, const std::string& name, float v) {
    onnx::AttributeProto* a = n.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(v);
  }

 private:
  template <class T>
  static int element_type() {
    if constexpr (std::is_same_v<T, float>) return onnx::TensorProto::FLOAT;
    if constexpr (std::is_same_v<T, int8_t>) return onnx::TensorProto::INT8;
    if constexpr (std::is_same_v<T, uint8_t>) return onnx::TensorProto::UINT8;
    if constexpr (std::is_same_v<T, int32_t>) return onnx::TensorProto::INT32;
    if constexpr (std::is_same_v<T, int64_t>) return onnx::TensorProto::INT64;
  }

  onnx::GraphProto& g_;
  int64_t next_ = 0;
};

// Writes one layer after another; `x` is the current value's name, `shape` its shape
// (batch 1: the batch dimension is dynamic and every reshape says -1 for it).
class Exporter {
 public:
  Exporter(onnx::GraphProto& graph, const QuantizationPlan* plan) : b_(graph), plan_(plan) {}

  std::string run(nn::Sequential<float>& model) {
    std::string x = "input";
    nn::Shape shape{1, 1, 28, 28};
    // The quantization of the value x holds (with a plan).
    std::optional<ActivationQuantization> current;
    if (plan_) x = quantize_dequantize(x, *(current = plan_->input));
    for (size_t i = 0; i < model.size(); ++i) {
      nn::Layer<float>& layer = model.layer(i);
      layer_ = std::to_string(i) + "." + layer.describe();
      const nn::Shape out = layer.output_shape(shape);
      const std::string in = x;
      x = emit(layer, i, x, shape);
      if (plan_ && i < plan_->outputs.size() && plan_->outputs[i]) {
        x = quantize_dequantize(x, *(current = plan_->outputs[i]));
      } else if (plan_ && current && x != in && i + 1 < model.size()) {
        // A layer that moves values without changing them (flatten, max pooling): its
        // output is on its input's grid, and a Q/DQ pair with the same scale and zero
        // point is exact there. It marks the next layer's input as quantized, which is
        // what lets a runtime run that layer in int8 (onnxruntime fuses DQ -> Gemm -> Q
        // into QGemm only when the DQ comes right before the Gemm).
        x = quantize_dequantize(x, *current);
      } else if (plan_) {
        current.reset();
      }
      shape = out;
    }
    if (!(shape == nn::Shape{1, 10}))
      throw ExportError("export: the model's output is " + shape.str() + " per image, not 10 logits");
    return x;
  }

 private:
  [[noreturn]] void unsupported(const std::string& why) const {
    throw ExportError("export: layer " + layer_ + ": " + why);
  }

  std::string quantize_dequantize(const std::string& x, const ActivationQuantization& a) {
    const std::string s = b_.scalar("scale", a.scale);
    const uint8_t z = a.zero_point;
    const std::string zp = b_.constant<uint8_t>("zero_point", std::span<const uint8_t>(&z, 1), {});
    return b_.op("DequantizeLinear", {b_.op("QuantizeLinear", {x, s, zp}), s, zp});
  }

  // A conv or linear layer's weight and bias: float initializers, or with a plan their
  // integers behind per-channel DequantizeLinear.
  std::pair<std::string, std::string> weights(size_t i, std::span<const float> weight,
                                              std::span<const float> bias,
                                              const std::vector<int64_t>& dims) {
    const int64_t c = dims[0];
    const std::vector<float> zeros(static_cast<size_t>(c), 0.f);
    const std::span<const float> b = bias.empty() ? std::span<const float>(zeros) : bias;
    if (!plan_) return {b_.constant<float>("weight", weight, dims), b_.constant<float>("bias", b, {c})};
    if (i >= plan_->weights.size() || !plan_->weights[i])
      unsupported("the quantization plan has no integer weights for it");
    const QuantizedWeights& q = *plan_->weights[i];
    const std::vector<int8_t> wz(static_cast<size_t>(c), 0);
    const std::vector<int32_t> bz(static_cast<size_t>(c), 0);
    auto per_channel = [&](const std::string& values, const std::vector<float>& scales,
                           const std::string& zero) {
      auto& n = b_.node("DequantizeLinear",
                        {values, b_.constant<float>("scale", std::span<const float>(scales), {c}), zero},
                        b_.fresh("DequantizeLinear"));
      GraphBuilder::integer(n, "axis", 0);
      return n.output(0);
    };
    return {per_channel(b_.constant<int8_t>("weight_q", std::span<const int8_t>(q.weight), dims),
                        q.weight_scale,
                        b_.constant<int8_t>("zero_point", std::span<const int8_t>(wz), {c})),
            per_channel(b_.constant<int32_t>("bias_q", std::span<const int32_t>(q.bias), {c}),
                        q.bias_scale,
                        b_.constant<int32_t>("zero_point", std::span<const int32_t>(bz), {c}))};
  }

  std::string affine(std::string y, std::span<const float> weight, std::span<const float> bias,
                     const std::vector<int64_t>& dims) {
    if (!weight.empty()) y = b_.op("Mul", {y, b_.constant<float>("weight", weight, dims)});
    if (!bias.empty()) y = b_.op("Add", {y, b_.constant<float>("bias", bias, dims)});
    return y;
  }

  std::string reduce_mean(const std::string& x, const std::vector<int64_t>& axes) {
    const std::string out = b_.fresh("ReduceMean");
    auto& n = b_.node("ReduceMean", {x}, out);
    GraphBuilder::ints(n, "axes", axes);
    GraphBuilder::integer(n, "keepdims", 1);
    return out;
  }

  // (x - mean) / sqrt(var + eps) within each of `groups` equal parts of every example,
  // var the biased variance, as every bnorm normalization computes it: x reshaped to
  // (N, groups, rest) and standardized by ONNX's InstanceNormalization (scale 1, bias 0),
  // then reshaped back to `shape`. Runtimes know InstanceNormalization; the literal
  // ReduceMean / Sub / Div decomposition broadcasts two computed tensors, which OpenCV's
  // importer (4.6) refuses.
  std::string standardize_groups(const std::string& x, int64_t groups, const nn::Shape& shape,
                                 double eps) {
    const std::vector<float> ones(static_cast<size_t>(groups), 1.f),
        zeros(static_cast<size_t>(groups), 0.f);
    // A dimension of 0 in a Reshape copies the input's: the batch stays dynamic.
    const std::string grouped = reshape(x, {0, groups, shape.numel() / shape[0] / groups});
    const std::string out = b_.fresh("InstanceNormalization");
    auto& n = b_.node("InstanceNormalization",
                      {grouped, b_.constant<float>("ones", std::span<const float>(ones), {groups}),
                       b_.constant<float>("zeros", std::span<const float>(zeros), {groups})},
                      out);
    GraphBuilder::real(n, "epsilon", static_cast<float>(eps));
    std::vector<int64_t> back{0};
    for (int d = 1; d < shape.rank(); ++d) back.push_back(shape[d]);
    return reshape(out, back);
  }

  std::string reshape(const std::string& x, const std::vector<int64_t>& dims) {
    return b_.op("Reshape",
                 {x, b_.constant<int64_t>("shape", std::span<const int64_t>(dims),
                                          {static_cast<int64_t>(dims.size())})});
  }

  std::string batch_norm(const std::string& x, int64_t c, std::span<const float> weight,
                         std::span<const float> bias, std::span<const float> mean,
                         std::span<const float> var, double eps) {
    const std::vector<float> ones(static_cast<size_t>(c), 1.f), zeros(static_cast<size_t>(c), 0.f);
    const std::string out = b_.fresh("BatchNormalization");
    auto& n = b_.node("BatchNormalization",
                      {x, b_.constant<float>("weight", weight.empty() ? ones : weight, {c}),
                       b_.constant<float>("bias", bias.empty() ? zeros : bias, {c}),
                       b_.constant<float>("running_mean", mean, {c}),
                       b_.constant<float>("running_var", var, {c})},
                      out);
    GraphBuilder::real(n, "epsilon", static_cast<float>(eps));
    return out;
  }

  std::string norm(nn::NormLayer<float>& layer, const std::string& x, const nn::Shape& shape) {
    const int rank = shape.rank();
    std::vector<int64_t> channel_dims{shape[1]};
    for (int d = 2; d < rank; ++d) channel_dims.push_back(1);
    return std::visit(
        [&](auto& m) -> std::string {
          using M = std::decay_t<decltype(m)>;
          if constexpr (std::is_same_v<M, LayerNorm<float>> || std::is_same_v<M, RMSNorm<float>>) {
            const auto& ns = m.normalized_shape();
            int64_t normalized = 1;
            for (int64_t d : ns) normalized *= d;
            if constexpr (std::is_same_v<M, LayerNorm<float>>) {
              // The last len(ns) dimensions together: (numel / normalized) groups per example.
              const int64_t groups = shape.numel() / shape[0] / normalized;
              return affine(standardize_groups(x, groups, shape, m.options().eps), m.weight(),
                            m.bias(), ns);
            } else {
              // y = x / sqrt(mean(x^2) + eps) * weight; eps unset: float's machine epsilon.
              std::vector<int64_t> axes;
              for (int d = rank - static_cast<int>(ns.size()); d < rank; ++d) axes.push_back(d);
              const double eps = m.options().eps.value_or(1.1920928955078125e-07);
              const std::string ms = reduce_mean(b_.op("Mul", {x, x}), axes);
              const std::string rms =
                  b_.op("Sqrt", {b_.op("Add", {ms, b_.scalar("eps", static_cast<float>(eps))})});
              return affine(b_.op("Div", {x, rms}), m.weight(), {}, ns);
            }
          } else if constexpr (std::is_same_v<M, GroupNorm<float>>) {
            return affine(standardize_groups(x, m.num_groups(), shape, m.options().eps),
                          m.weight(), m.bias(), channel_dims);
          } else {  // InstanceNorm
            if (m.options().track_running_stats)  // eval mode: the running statistics
              return batch_norm(x, m.num_features(), m.weight(), m.bias(), m.running_mean(),
                                m.running_var(), m.options().eps);
            return affine(standardize_groups(x, shape[1], shape, m.options().eps), m.weight(),
                          m.bias(), channel_dims);
          }
        },
        layer.module());
  }

  std::string emit(nn::Layer<float>& layer, size_t i, const std::string& x, const nn::Shape& shape) {
    if (auto* conv = dynamic_cast<nn::Conv2d<float>*>(&layer)) {
      const nn::Conv2dOptions& o = conv->options();
      const auto [w, bias] = weights(i, conv->weight(), conv->bias(),
                                     {o.out_channels, o.in_channels, o.kernel_size, o.kernel_size});
      const std::string out = b_.fresh("Conv");
      auto& n = b_.node("Conv", {x, w, bias}, out);
      GraphBuilder::ints(n, "kernel_shape", {o.kernel_size, o.kernel_size});
      GraphBuilder::ints(n, "strides", {o.stride, o.stride});
      GraphBuilder::ints(n, "pads", {o.padding, o.padding, o.padding, o.padding});
      return out;
    }
    if (auto* linear = dynamic_cast<nn::Linear<float>*>(&layer)) {
      const auto [w, bias] = weights(i, linear->weight(), linear->bias(),
                                     {linear->fan_out(), linear->fan_in()});
      const std::string out = b_.fresh("Gemm");
      GraphBuilder::integer(b_.node("Gemm", {x, w, bias}, out), "transB", 1);
      return out;
    }
    if (auto* act = dynamic_cast<nn::Elementwise<float>*>(&layer)) {
      switch (act->kind()) {
        case nn::Activation::sigmoid: return b_.op("Sigmoid", {x});
        case nn::Activation::tanh: return b_.op("Tanh", {x});
        case nn::Activation::relu: return b_.op("Relu", {x});
      }
    }
    if (auto* pool = dynamic_cast<nn::Pool2d<float>*>(&layer)) {
      const bool max = dynamic_cast<nn::MaxPool2d<float>*>(&layer) != nullptr;
      const std::string out = b_.fresh(max ? "MaxPool" : "AveragePool");
      auto& n = b_.node(max ? "MaxPool" : "AveragePool", {x}, out);
      GraphBuilder::ints(n, "kernel_shape", {pool->kernel_size(), pool->kernel_size()});
      GraphBuilder::ints(n, "strides", {pool->stride(), pool->stride()});
      return out;
    }
    if (dynamic_cast<nn::Flatten<float>*>(&layer)) {
      const std::string out = b_.fresh("Flatten");
      GraphBuilder::integer(b_.node("Flatten", {x}, out), "axis", 1);
      return out;
    }
    if (dynamic_cast<nn::Dropout<float>*>(&layer)) return x;  // identity at inference
    if (auto* bn = dynamic_cast<nn::BatchNormLayer<float>*>(&layer)) {
      BatchNorm<float>& m = bn->module();
      if (!m.options().track_running_stats)
        unsupported("batch norm without running statistics normalizes each batch by itself, "
                    "which ONNX's BatchNormalization (inference) cannot express");
      return batch_norm(x, m.num_features(), m.weight(), m.bias(), m.running_mean(),
                        m.running_var(), m.options().eps);
    }
    if (auto* a = dynamic_cast<nn::ChannelAffine<float>*>(&layer))
      return affine(x, a->scale(), a->shift(), per_channel_dims(a->scale().size(), shape.rank()));
    if (auto* n = dynamic_cast<nn::NormLayer<float>*>(&layer)) return norm(*n, x, shape);
    unsupported("no ONNX mapping for this layer");
  }

  static std::vector<int64_t> per_channel_dims(size_t c, int rank) {
    std::vector<int64_t> dims{static_cast<int64_t>(c)};
    for (int d = 2; d < rank; ++d) dims.push_back(1);
    return dims;
  }

  GraphBuilder b_;
  const QuantizationPlan* plan_;
  std::string layer_;
};

void tensor_type(onnx::ValueInfoProto* v, const std::string& name,
                 const std::vector<int64_t>& dims) {
  v->set_name(name);
  onnx::TypeProto_Tensor* t = v->mutable_type()->mutable_tensor_type();
  t->set_elem_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims) {
    onnx::TensorShapeProto_Dimension* dim = t->mutable_shape()->add_dim();
    if (d < 0)
      dim->set_dim_param("N");
    else
      dim->set_dim_value(d);
  }
}

}  // namespace

void check_exportable_state(nn::Sequential<float>& model) {
  for (size_t i = 0; i < model.size(); ++i) {
    nn::Layer<float>& layer = model.layer(i);
    const std::string where = "export: layer " + std::to_string(i) + "." + layer.describe();
    nn::StateLists<float> state;
    layer.collect_state(state, "");
    auto check = [&](const std::string& name, std::span<const float> values) {
      for (float v : values)
        if (!std::isfinite(v))
          throw ExportError(where + ": " + name + " holds " + (std::isnan(v) ? "NaN" : "an infinity") +
                            ", so the exported model would compute NaN (a diverged training run?)");
    };
    for (const auto& p : state.parameters) check(p.name, p.value);
    for (const auto& b : state.buffers) check(b.name, b.value);
    if (auto* bn = dynamic_cast<nn::BatchNormLayer<float>*>(&layer)) {
      const std::span<const float> var = bn->module().running_var();
      for (size_t k = 0; k < var.size(); ++k)
        if (static_cast<double>(var[k]) + bn->module().options().eps <= 0)
          throw ExportError(where + ": running_var[" + std::to_string(k) +
                            "] + eps must be > 0 (a variance), got " + std::to_string(var[k]));
    }
  }
}

std::string export_onnx(nn::Sequential<float>& model, const OnnxExportOptions& options) {
  if (model.is_training())
    throw std::invalid_argument("export: the model is in training mode; export an eval-mode model");
  onnx::ModelProto m;
  m.set_ir_version(kIrVersion);
  m.set_producer_name("bnorm");
  m.set_producer_version(bnorm::version());
  m.set_doc_string(options.doc);
  onnx::OperatorSetIdProto* opset = m.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOpset);
  onnx::GraphProto* g = m.mutable_graph();
  g->set_name(options.graph_name);
  tensor_type(g->add_input(), "input", {-1, 1, 28, 28});
  tensor_type(g->add_output(), "logits", {-1, 10});
  check_exportable_state(model);
  Exporter exporter(*g, options.quantization);
  const std::string last = exporter.run(model);
  if (last == "input") throw ExportError("export: the model has no layer that computes anything");
  // The last value is the graph's output: name it "logits" where it is produced.
  for (auto& node : *g->mutable_node())
    for (auto& out : *node.mutable_output())
      if (out == last) out = "logits";
  for (auto& node : *g->mutable_node())
    for (auto& in : *node.mutable_input())
      if (in == last) in = "logits";
  check_onnx_model(m);
  std::string bytes;
  if (!m.SerializeToString(&bytes)) throw ExportError("export: protobuf could not serialize the model");
  return bytes;
}

}  // namespace bnorm::deploy
