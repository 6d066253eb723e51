// Post-training static int8 quantization of a folded model (QDQ), and the engine's
// simulation of it.
//
// Activations: per tensor, asymmetric uint8, calibrated on training examples:
//   q = saturate_uint8(round_half_even(x / s) + z),   x' = (q - z) * s
// with [lo, hi] the calibrated range widened to hold 0 (so 0 is exact), s = (hi - lo) /
// 255, z = round(-lo / s). Calibration: minmax (the smallest and largest value seen) or
// percentile (the p-th and (100 - p)-th percentiles of every value seen, clipping rare
// outliers for a finer step).
// Weights: per output channel, symmetric int8 in [-127, 127]: s_w[c] = max|W[c,:]| / 127
// (1 where the row is all zero), q = round_half_even(W / s_w[c]).
// Bias: int32 with scale s_in * s_w[c] (the input's activation scale), zero point 0,
// as QLinearConv and QGemm expect.
// Where: the network input, and the output of every layer but the last (the logits stay
// float) that changes values (dropout and flatten do not: they share their input's).
//
// The ONNX exporter (onnx_export.h) writes exactly this plan as QuantizeLinear /
// DequantizeLinear pairs; simulate() builds an engine model that computes the same
// float operations (FakeQuantize layers, dequantized weights), so its accuracy predicts
// the runtime's.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "nn/sequential.h"

namespace bnorm::deploy {

enum class Calibration { minmax, percentile };

struct ActivationQuantization {
  float scale = 1;
  uint8_t zero_point = 0;
  float low = 0, high = 0;  // the calibrated range (before widening to hold 0)
};

// A conv or linear layer's weight and bias in integers.
struct QuantizedWeights {
  std::vector<int8_t> weight;   // the layer's weight layout
  std::vector<float> weight_scale;  // per output channel
  std::vector<int32_t> bias;        // per output channel
  std::vector<float> bias_scale;    // input scale * weight_scale[c], rounded to float
};

struct QuantizationPlan {
  ActivationQuantization input;
  // Per layer of the folded model: its output's quantization (none: float, or the
  // same values as its input), and for conv / linear layers their integer weights.
  std::vector<std::optional<ActivationQuantization>> outputs;
  std::vector<std::optional<QuantizedWeights>> weights;
  Calibration calibration = Calibration::minmax;
  double percentile = 99.99;
  int64_t calibration_examples = 0;
};

struct CalibrationOptions {
  Calibration method = Calibration::minmax;
  double percentile = 99.99;  // percentile: keep [p_(100-x), p_x] of the values
  int64_t examples = 1000;    // the first examples of the training set
  int64_t batch_size = 256;
};

// The plan for `model` (folded, eval mode: std::invalid_argument otherwise, and for
// examples < 1 or more than the set holds; a layer other than conv, linear,
// activations, pools, flatten, dropout and ChannelAffine is refused by name).
QuantizationPlan calibrate(nn::Sequential<float>& model, const data::ImageDataset& train,
                           const CalibrationOptions& options);

// ActivationQuantization for a calibrated range (public for the tests).
ActivationQuantization activation_quantization(float low, float high);
// Per-channel weights and bias (public for the tests). weight: out_channels rows.
QuantizedWeights quantize_weights(std::span<const float> weight, std::span<const float> bias,
                                  int64_t out_channels, float input_scale);

// q = saturate_uint8(nearbyint(x / scale) + zero_point), then (q - zero_point) * scale,
// in float: what a QuantizeLinear / DequantizeLinear pair computes.
inline float fake_quantize(float x, const ActivationQuantization& a);

// The model (folded, as calibrated) rewritten to compute the plan in float: a
// FakeQuantize layer at the input and after every quantized output, each conv and
// linear layer's weight and bias replaced by their dequantized values. `model` itself is
// changed into it (its layers are reused).
void simulate(nn::Sequential<float>& model, const QuantizationPlan& plan);

}  // namespace bnorm::deploy

#include <cmath>

inline float bnorm::deploy::fake_quantize(float x, const ActivationQuantization& a) {
  float q = std::nearbyint(x / a.scale) + static_cast<float>(a.zero_point);
  q = q < 0.f ? 0.f : q > 255.f ? 255.f : q;  // NaN stays NaN
  return (q - static_cast<float>(a.zero_point)) * a.scale;
}
