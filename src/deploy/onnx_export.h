// An engine model written as an ONNX model (opset 13) through the ONNX library's own
// protobuf classes, and checked by its checker (onnx::checker::check_model, full shape
// inference on) before anything is written.
//
//   input   "input"   float32 (N, 1, 28, 28), N dynamic: pixels scaled to [0, 1]
//   output  "logits"  float32 (N, 10)
//
// Layer by layer:
//   Conv2d -> Conv;  Linear -> Gemm (transB = 1);  sigmoid / tanh / ReLU -> Sigmoid /
//   Tanh / Relu;  AvgPool2d / MaxPool2d -> AveragePool / MaxPool;  Flatten -> Flatten
//   (axis 1);  Dropout -> nothing (identity at inference);  BatchNorm (not folded) ->
//   BatchNormalization with its running statistics;  ChannelAffine -> Mul, Add;
//   LayerNorm, GroupNorm, InstanceNorm (own statistics) -> Reshape to (N, groups, rest),
//   InstanceNormalization (scale 1, bias 0), Reshape back, Mul weight, Add bias (opset 13
//   has no LayerNormalization; OpenCV 4.6 imports this form, not the ReduceMean one);
//   RMSNorm -> Mul, ReduceMean, Add eps, Sqrt, Div, Mul weight;
//   InstanceNorm with running statistics in eval mode -> BatchNormalization.
// With a QuantizationPlan (quantization.h): QuantizeLinear / DequantizeLinear on the
// input and on every quantized layer output, int8 weights and int32 biases behind
// DequantizeLinear (per channel, axis 0).
#pragma once

#include <stdexcept>
#include <string>

#include "deploy/quantization.h"
#include "nn/sequential.h"

namespace bnorm::deploy {

// A model the exporter cannot write (a layer it does not know), or one the checker
// refuses; the message names the layer or the checker's complaint.
class ExportError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct OnnxExportOptions {
  std::string graph_name = "bnorm";
  std::string doc;                           // the model's doc_string
  const QuantizationPlan* quantization = nullptr;  // null: float
};

// Every parameter and buffer finite, every batch norm's running_var + eps > 0, or an
// ExportError naming the layer and tensor: a model that would compute NaN for every input
// (a diverged run's checkpoint) is refused, not written. export_onnx checks it; a caller
// that folds first checks before folding, so the message names the original layer.
void check_exportable_state(nn::Sequential<float>& model);

// The model, in eval mode (std::invalid_argument otherwise), serialized and checked.
std::string export_onnx(nn::Sequential<float>& model, const OnnxExportOptions& options);

}  // namespace bnorm::deploy
