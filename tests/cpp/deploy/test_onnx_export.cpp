// ONNX export (deploy/onnx_export.h), read back through the ONNX library's protobuf
// classes: the graph's input and output, the opset, the nodes a folded and an unfolded
// LeNet-BN become, weights written bit for bit, Q/DQ with int8 weights for a quantized
// plan, and the refusals.
#include <gtest/gtest.h>

#include <onnx/onnx_pb.h>  // not onnx/checker.h: its MAP_TYPE collides with sys/mman.h's

#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "deploy/model_folding.h"
#include "deploy/onnx_export.h"
#include "deploy/quantization.h"
#include "deploy_test_support.h"
#include "nn/batch_norm_layer.h"
#include "nn/channel_affine.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/models.h"
#include "nn/pooling.h"
#include "nn/reshape.h"

namespace bnorm::deploy {
namespace {

using namespace bnorm::deploy::testing;

onnx::ModelProto parse(const std::string& bytes) {
  onnx::ModelProto m;
  EXPECT_TRUE(m.ParseFromString(bytes)) << "the exported bytes are not a ModelProto";
  return m;
}

std::map<std::string, int> op_counts(const onnx::GraphProto& g) {
  std::map<std::string, int> n;
  for (const auto& node : g.node()) ++n[node.op_type()];
  return n;
}

const onnx::TensorProto* initializer(const onnx::GraphProto& g, const std::string& name) {
  for (const auto& t : g.initializer())
    if (t.name() == name) return &t;
  return nullptr;
}

const onnx::NodeProto* first_node(const onnx::GraphProto& g, const std::string& op) {
  for (const auto& node : g.node())
    if (node.op_type() == op) return &node;
  return nullptr;
}

template <class T>
std::string bytes_of(std::span<const T> values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

// A tensor value's dims: -1 for a symbolic (dynamic) one.
std::vector<int64_t> dims_of(const onnx::ValueInfoProto& v) {
  std::vector<int64_t> out;
  for (const auto& d : v.type().tensor_type().shape().dim())
    out.push_back(d.has_dim_value() ? d.dim_value() : (d.has_dim_param() ? -1 : -2));
  return out;
}

std::unique_ptr<nn::Sequential<float>> eval_lenet_bn(uint64_t seed) {
  auto model = nn::make_model<float>("lenet-bn", seed);
  randomize_batch_norms(*model, seed + 1);
  model->set_training(false);
  return model;
}

void expect_graph_interface(const onnx::ModelProto& m) {
  ASSERT_EQ(m.opset_import_size(), 1);
  EXPECT_EQ(m.opset_import(0).domain(), "");
  EXPECT_EQ(m.opset_import(0).version(), 13);
  EXPECT_EQ(m.ir_version(), 7);
  EXPECT_EQ(m.producer_name(), "bnorm");
  const onnx::GraphProto& g = m.graph();
  ASSERT_EQ(g.input_size(), 1);
  EXPECT_EQ(g.input(0).name(), "input");
  EXPECT_EQ(g.input(0).type().tensor_type().elem_type(), onnx::TensorProto::FLOAT);
  EXPECT_EQ(dims_of(g.input(0)), (std::vector<int64_t>{-1, 1, 28, 28}));
  ASSERT_EQ(g.output_size(), 1);
  EXPECT_EQ(g.output(0).name(), "logits");
  EXPECT_EQ(g.output(0).type().tensor_type().elem_type(), onnx::TensorProto::FLOAT);
  EXPECT_EQ(dims_of(g.output(0)), (std::vector<int64_t>{-1, 10}));
  // Exactly one node produces "logits" (the last one) and nothing else is left named
  // after an intermediate value that no node produces.
  int producers = 0;
  for (const auto& node : g.node())
    for (const auto& out : node.output()) producers += out == "logits";
  EXPECT_EQ(producers, 1);
  ASSERT_GT(g.node_size(), 0);
  EXPECT_EQ(g.node(g.node_size() - 1).output(0), "logits");
}

TEST(OnnxExport, FoldedLeNetBnHasNoBatchNormalizationAndItsFoldedWeights) {
  auto model = eval_lenet_bn(1);
  fold_batch_norms(*model);
  OnnxExportOptions options;
  options.graph_name = "lenet_bn_folded";
  options.doc = "a test";
  const onnx::ModelProto m = parse(export_onnx(*model, options));
  expect_graph_interface(m);
  EXPECT_EQ(m.graph().name(), "lenet_bn_folded");
  EXPECT_EQ(m.doc_string(), "a test");
  const auto ops = op_counts(m.graph());
  EXPECT_EQ(ops.count("BatchNormalization"), 0u);
  EXPECT_EQ(ops.at("Conv"), 2);
  EXPECT_EQ(ops.at("Gemm"), 3);
  EXPECT_EQ(ops.at("Sigmoid"), 4);
  EXPECT_EQ(ops.at("AveragePool"), 2);
  EXPECT_EQ(ops.at("Flatten"), 1);
  EXPECT_EQ(ops.count("QuantizeLinear"), 0u);

  // The first Conv's weight and bias are the folded model's, bit for bit.
  const onnx::NodeProto* conv = first_node(m.graph(), "Conv");
  ASSERT_NE(conv, nullptr);
  ASSERT_EQ(conv->input_size(), 3);
  EXPECT_EQ(conv->input(0), "input");
  auto* layer = dynamic_cast<nn::Conv2d<float>*>(&model->layer(0));
  ASSERT_NE(layer, nullptr);
  const onnx::TensorProto* w = initializer(m.graph(), conv->input(1));
  const onnx::TensorProto* b = initializer(m.graph(), conv->input(2));
  ASSERT_TRUE(w && b);
  EXPECT_EQ(w->data_type(), onnx::TensorProto::FLOAT);
  EXPECT_EQ(std::vector<int64_t>(w->dims().begin(), w->dims().end()),
            (std::vector<int64_t>{6, 1, 5, 5}));
  EXPECT_EQ(w->raw_data(), bytes_of<float>(layer->weight()));
  EXPECT_EQ(b->raw_data(), bytes_of<float>(layer->bias()));
}

TEST(OnnxExport, UnfoldedLeNetBnHasFourBatchNormalizations) {
  auto model = eval_lenet_bn(2);
  const onnx::ModelProto m = parse(export_onnx(*model, {}));
  expect_graph_interface(m);
  const auto ops = op_counts(m.graph());
  EXPECT_EQ(ops.at("BatchNormalization"), 4);
  EXPECT_EQ(ops.at("Conv"), 2);
  EXPECT_EQ(ops.at("Gemm"), 3);
  // The first one carries layer 1's statistics and eps.
  const onnx::NodeProto* bn = first_node(m.graph(), "BatchNormalization");
  ASSERT_NE(bn, nullptr);
  ASSERT_EQ(bn->input_size(), 5);
  auto* layer = dynamic_cast<nn::BatchNormLayer<float>*>(&model->layer(1));
  ASSERT_NE(layer, nullptr);
  BatchNorm<float>& mod = layer->module();
  const char* names[] = {"scale", "bias", "mean", "var"};
  const std::span<const float> values[] = {mod.weight(), mod.bias(), mod.running_mean(),
                                           mod.running_var()};
  for (int k = 0; k < 4; ++k) {
    const onnx::TensorProto* t = initializer(m.graph(), bn->input(k + 1));
    ASSERT_NE(t, nullptr) << names[k];
    EXPECT_EQ(t->raw_data(), bytes_of<float>(values[k])) << names[k];
  }
  bool has_eps = false;
  for (const auto& a : bn->attribute())
    if (a.name() == "epsilon") {
      has_eps = true;
      EXPECT_FLOAT_EQ(a.f(), 1e-5f);
    }
  EXPECT_TRUE(has_eps);
}

TEST(OnnxExport, ChannelAffineBecomesMulAndAdd) {
  nn::Sequential<float> model;
  model.emplace<nn::Conv2d<float>>(nn::Conv2dOptions{1, 2, 3, 1, 0, true});
  model.emplace<nn::AvgPool2d<float>>(2);
  model.emplace<nn::BatchNormLayer<float>>(2, 2);
  model.emplace<nn::Flatten<float>>();
  model.emplace<nn::Linear<float>>(2 * 13 * 13, 10);
  randomize_batch_norms(model, 3);
  model.set_training(false);
  const FoldReport r = fold_batch_norms(model);
  ASSERT_EQ(r.kept_as_affine.size(), 1u);
  auto* affine = dynamic_cast<nn::ChannelAffine<float>*>(&model.layer(2));
  ASSERT_NE(affine, nullptr);
  const onnx::ModelProto m = parse(export_onnx(model, {}));
  expect_graph_interface(m);
  const auto ops = op_counts(m.graph());
  EXPECT_EQ(ops.count("BatchNormalization"), 0u);
  EXPECT_EQ(ops.at("Mul"), 1);
  EXPECT_EQ(ops.at("Add"), 1);
  const onnx::NodeProto* mul = first_node(m.graph(), "Mul");
  const onnx::TensorProto* scale = initializer(m.graph(), mul->input(1));
  ASSERT_NE(scale, nullptr);
  EXPECT_EQ(std::vector<int64_t>(scale->dims().begin(), scale->dims().end()),
            (std::vector<int64_t>{2, 1, 1}));
  EXPECT_EQ(scale->raw_data(), bytes_of<float>(affine->scale()));
  const onnx::TensorProto* shift = initializer(m.graph(), first_node(m.graph(), "Add")->input(1));
  ASSERT_NE(shift, nullptr);
  EXPECT_EQ(shift->raw_data(), bytes_of<float>(affine->shift()));
}

TEST(OnnxExport, TrainingModeIsRefused) {
  auto model = nn::make_model<float>("lenet-bn", 4);
  ASSERT_TRUE(model->is_training());
  try {
    export_onnx(*model, {});
    ADD_FAILURE() << "a training-mode model was exported";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("training mode"), std::string::npos) << e.what();
  }
}

TEST(OnnxExport, ModelsItCannotWriteAreRefusedNamingTheProblem) {
  {  // not 10 logits
    nn::Sequential<float> model;
    model.emplace<nn::Flatten<float>>();
    model.emplace<nn::Linear<float>>(784, 5);
    model.set_training(false);
    try {
      export_onnx(model, {});
      ADD_FAILURE() << "a model with 5 outputs was exported";
    } catch (const ExportError& e) {
      EXPECT_NE(std::string(e.what()).find("not 10 logits"), std::string::npos) << e.what();
    }
  }
  {  // a NaN weight
    auto model = eval_lenet_bn(5);
    dynamic_cast<nn::Conv2d<float>&>(model->layer(4)).weight()[7] =
        std::numeric_limits<float>::quiet_NaN();
    try {
      export_onnx(*model, {});
      ADD_FAILURE() << "a model with a NaN weight was exported";
    } catch (const ExportError& e) {
      EXPECT_NE(std::string(e.what()).find("layer 4.Conv2d(6, 16, kernel_size=5)"),
                std::string::npos)
          << e.what();
      EXPECT_NE(std::string(e.what()).find("NaN"), std::string::npos) << e.what();
    }
  }
}

TEST(OnnxExport, QuantizedExportHasQdqPairsAndInt8Weights) {
  auto model = eval_lenet_bn(6);
  fold_batch_norms(*model);
  const data::ImageDataset d = tiny_dataset(8, 7);
  CalibrationOptions o;
  o.examples = 8;
  const QuantizationPlan plan = calibrate(*model, d, o);
  OnnxExportOptions options;
  options.quantization = &plan;
  const onnx::ModelProto m = parse(export_onnx(*model, options));
  expect_graph_interface(m);
  const onnx::GraphProto& g = m.graph();
  const auto ops = op_counts(g);
  int quantized_outputs = 0;
  for (const auto& q : plan.outputs) quantized_outputs += q.has_value();
  // The input, every quantized output, and the flatten's output (re-marked on its
  // input's grid for the Gemm after it).
  EXPECT_EQ(ops.at("QuantizeLinear"), 1 + quantized_outputs + 1);
  // One DequantizeLinear per QuantizeLinear, plus a weight and a bias one per conv and
  // linear layer (5 of them).
  EXPECT_EQ(ops.at("DequantizeLinear"), ops.at("QuantizeLinear") + 2 * 5);
  EXPECT_EQ(ops.count("BatchNormalization"), 0u);

  // The first node quantizes the input with the plan's scale and zero point.
  const onnx::NodeProto& q0 = g.node(0);
  EXPECT_EQ(q0.op_type(), "QuantizeLinear");
  ASSERT_EQ(q0.input_size(), 3);
  EXPECT_EQ(q0.input(0), "input");
  const onnx::TensorProto* s0 = initializer(g, q0.input(1));
  const onnx::TensorProto* z0 = initializer(g, q0.input(2));
  ASSERT_TRUE(s0 && z0);
  EXPECT_EQ(s0->raw_data(), bytes_of<float>(std::span<const float>(&plan.input.scale, 1)));
  EXPECT_EQ(z0->data_type(), onnx::TensorProto::UINT8);
  EXPECT_EQ(z0->raw_data(), bytes_of<uint8_t>(std::span<const uint8_t>(&plan.input.zero_point, 1)));

  // int8 weights and int32 biases: the plan's, with the layers' shapes.
  std::vector<std::vector<int64_t>> int8_dims;
  int int32_count = 0;
  for (const auto& t : g.initializer()) {
    if (t.data_type() == onnx::TensorProto::INT8 && t.name().rfind("weight_q", 0) == 0)
      int8_dims.emplace_back(t.dims().begin(), t.dims().end());
    if (t.data_type() == onnx::TensorProto::INT32 && t.name().rfind("bias_q", 0) == 0) ++int32_count;
  }
  EXPECT_EQ(int8_dims, (std::vector<std::vector<int64_t>>{
                           {6, 1, 5, 5}, {16, 6, 5, 5}, {120, 256}, {84, 120}, {10, 84}}));
  EXPECT_EQ(int32_count, 5);
  // The first Conv reads the dequantized int8 weights of plan.weights[0].
  const onnx::NodeProto* conv = first_node(g, "Conv");
  ASSERT_NE(conv, nullptr);
  const onnx::NodeProto* dq_w = nullptr;
  for (const auto& node : g.node())
    if (node.output(0) == conv->input(1)) dq_w = &node;
  ASSERT_NE(dq_w, nullptr);
  EXPECT_EQ(dq_w->op_type(), "DequantizeLinear");
  const onnx::TensorProto* wq = initializer(g, dq_w->input(0));
  const onnx::TensorProto* ws = initializer(g, dq_w->input(1));
  ASSERT_TRUE(wq && ws);
  EXPECT_EQ(wq->data_type(), onnx::TensorProto::INT8);
  EXPECT_EQ(wq->raw_data(), bytes_of<int8_t>(plan.weights[0]->weight));
  EXPECT_EQ(ws->raw_data(), bytes_of<float>(plan.weights[0]->weight_scale));
  bool axis0 = false;
  for (const auto& a : dq_w->attribute()) axis0 = axis0 || (a.name() == "axis" && a.i() == 0);
  EXPECT_TRUE(axis0);
}


// Every named model with batch norm exports folded and unfolded, float and quantized
// (the ONNX checker, with shape inference, runs inside export_onnx): ReLU, MaxPool,
// Dropout and BatchNormalization on (N, C) included.
TEST(OnnxExport, EveryBatchNormModelExportsFoldedUnfoldedAndQuantized) {
  const data::ImageDataset d = tiny_dataset(4, 8);
  for (const std::string name : {"lenet-bn", "mlp-bn", "vgg-bn"}) {
    SCOPED_TRACE(name);
    auto model = nn::make_model<float>(name, 9);
    randomize_batch_norms(*model, 10);
    model->set_training(false);
    const onnx::ModelProto unfolded = parse(export_onnx(*model, {}));
    expect_graph_interface(unfolded);
    const int bn = count_layers<nn::BatchNormLayer<float>>(*model);
    EXPECT_EQ(op_counts(unfolded.graph()).at("BatchNormalization"), bn);
    fold_batch_norms(*model);
    const onnx::ModelProto folded = parse(export_onnx(*model, {}));
    expect_graph_interface(folded);
    EXPECT_EQ(op_counts(folded.graph()).count("BatchNormalization"), 0u);
    CalibrationOptions o;
    o.examples = 4;
    const QuantizationPlan plan = calibrate(*model, d, o);
    OnnxExportOptions options;
    options.quantization = &plan;
    const onnx::ModelProto quantized = parse(export_onnx(*model, options));
    expect_graph_interface(quantized);
    EXPECT_GT(op_counts(quantized.graph()).at("QuantizeLinear"), 0);
  }
}

}  // namespace
}  // namespace bnorm::deploy
