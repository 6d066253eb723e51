// Int8 quantization (deploy/quantization.h): the activation parameters for a range
// (0 exact, scale (hi - lo) / 255), fake_quantize's rounding and saturation, per-channel
// weights and int32 biases, calibration's refusals and ranges, and simulate() on a
// folded LeNet-BN against the float model.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "deploy/fake_quantize.h"
#include "deploy/model_folding.h"
#include "deploy/onnx_export.h"
#include "deploy/quantization.h"
#include "deploy_test_support.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/models.h"
#include "nn/reshape.h"

namespace bnorm::deploy {
namespace {

using namespace bnorm::deploy::testing;

// What a QuantizeLinear / DequantizeLinear pair computes, in double: round half to even,
// saturate to [0, 255].
double reference_fake_quantize(double x, double scale, int zero_point) {
  double q = std::nearbyint(x / scale) + zero_point;
  q = std::clamp(q, 0.0, 255.0);
  return (q - zero_point) * scale;
}

TEST(ActivationQuantization, RangeWidenedToHoldZero) {
  {  // all positive: lo widened to 0, zero point 0
    const ActivationQuantization a = activation_quantization(0.5f, 2.0f);
    EXPECT_EQ(a.low, 0.5f);
    EXPECT_EQ(a.high, 2.0f);
    EXPECT_EQ(a.scale, 2.0f / 255.f);
    EXPECT_EQ(a.zero_point, 0);
    EXPECT_EQ(fake_quantize(0.f, a), 0.f);
  }
  {  // all negative: hi widened to 0, zero point 255
    const ActivationQuantization a = activation_quantization(-2.0f, -0.5f);
    EXPECT_EQ(a.scale, 2.0f / 255.f);
    EXPECT_EQ(a.zero_point, 255);
    EXPECT_EQ(fake_quantize(0.f, a), 0.f);
    EXPECT_EQ(fake_quantize(-2.f, a), -255 * a.scale);
  }
  {  // both signs: z = round(-lo / s) = round(63.75) = 64
    const ActivationQuantization a = activation_quantization(-1.0f, 3.0f);
    EXPECT_EQ(a.scale, 4.0f / 255.f);
    EXPECT_EQ(a.zero_point, 64);
    EXPECT_EQ(fake_quantize(0.f, a), 0.f);
    EXPECT_EQ(fake_quantize(-0.f, a), 0.f);
  }
  {  // nothing but zero: scale 1 keeps it exactly
    const ActivationQuantization a = activation_quantization(0.f, 0.f);
    EXPECT_EQ(a.scale, 1.f);
    EXPECT_EQ(a.zero_point, 0);
    EXPECT_EQ(fake_quantize(0.f, a), 0.f);
  }
  // A range that is not finite comes from a model computing NaN or infinity: refused.
  EXPECT_THROW(activation_quantization(-std::numeric_limits<float>::infinity(), 1.f),
               std::invalid_argument);
  EXPECT_THROW(activation_quantization(0.f, std::numeric_limits<float>::quiet_NaN()),
               std::invalid_argument);
}

TEST(ActivationQuantization, ZeroIsExactForManyRanges) {
  nn::Rng rng(3);
  for (int i = 0; i < 200; ++i) {
    const auto lo = static_cast<float>(rng.uniform(-10.0, 1.0));
    const auto hi = static_cast<float>(rng.uniform(-1.0, 10.0));
    const ActivationQuantization a = activation_quantization(lo, hi);
    ASSERT_EQ(fake_quantize(0.f, a), 0.f) << lo << " " << hi;
    const float l = std::min(lo, 0.f), h = std::max(hi, 0.f);
    ASSERT_FLOAT_EQ(a.scale, (h - l) / 255.f);
  }
}

TEST(FakeQuantize, RoundsHalfToEvenSaturatesAndKeepsNaN) {
  // scale 0.25 exactly (63.75 / 255), zero point 0: x / s is exact below.
  const ActivationQuantization a = activation_quantization(0.f, 63.75f);
  ASSERT_EQ(a.scale, 0.25f);
  ASSERT_EQ(a.zero_point, 0);
  EXPECT_EQ(fake_quantize(0.125f, a), 0.f);   // 0.5 -> 0
  EXPECT_EQ(fake_quantize(0.375f, a), 0.5f);  // 1.5 -> 2
  EXPECT_EQ(fake_quantize(0.625f, a), 0.5f);  // 2.5 -> 2
  EXPECT_EQ(fake_quantize(0.3f, a), 0.25f);
  // Saturation at both ends of [0, 255] (in units of the scale, minus the zero point).
  EXPECT_EQ(fake_quantize(1000.f, a), 63.75f);
  EXPECT_EQ(fake_quantize(-5.f, a), 0.f);
  EXPECT_EQ(fake_quantize(std::numeric_limits<float>::infinity(), a), 63.75f);
  EXPECT_TRUE(std::isnan(fake_quantize(std::numeric_limits<float>::quiet_NaN(), a)));

  const ActivationQuantization b = activation_quantization(-1.f, 3.f);  // z = 64
  const float lowest = -64 * b.scale, highest = (255 - 64) * b.scale;
  EXPECT_EQ(fake_quantize(-100.f, b), lowest);
  EXPECT_EQ(fake_quantize(100.f, b), highest);
  EXPECT_TRUE(std::isnan(fake_quantize(std::numeric_limits<float>::quiet_NaN(), b)));
  // Inside the range: the reference, and within half a step of x.
  nn::Rng rng(4);
  for (int i = 0; i < 1000; ++i) {
    const auto x = static_cast<float>(rng.uniform(-1.2, 3.2));
    const float y = fake_quantize(x, b);
    ASSERT_NEAR(y, reference_fake_quantize(x, b.scale, b.zero_point), 1e-6) << x;
    if (x >= lowest && x <= highest) {
      ASSERT_LE(std::fabs(y - x), 0.5f * b.scale * 1.0001f) << x;
    }
  }
}

TEST(FakeQuantizeLayer, ForwardIsFakeQuantizeAndBackwardIsStraightThrough) {
  const ActivationQuantization a = activation_quantization(-1.f, 3.f);
  FakeQuantize layer(a);
  EXPECT_EQ(layer.describe().rfind("FakeQuantize(", 0), 0u) << layer.describe();
  nn::Tensor<float> x = random_tensor<float>(nn::Shape{2, 3, 4}, 5, -2.0, 4.0);
  nn::Tensor<float> y(x.shape()), dy(x.shape()), dx(x.shape());
  dy.fill(1.f);
  layer.forward(x, y);
  layer.backward(x, y, dy, &dx);
  for (int64_t i = 0; i < x.numel(); ++i) {
    ASSERT_EQ(y[i], fake_quantize(x[i], a)) << i;
    const bool inside = x[i] >= -64 * a.scale && x[i] <= 191 * a.scale;
    ASSERT_EQ(dx[i], inside ? 1.f : 0.f) << x[i];
  }
}

TEST(QuantizeWeights, PerChannelScalesIntegersAndBias) {
  // 4 rows of 6: random, all zero, one large value, negative largest.
  const int64_t rows = 4, per = 6;
  std::vector<float> w(static_cast<size_t>(rows * per));
  nn::Rng rng(6);
  for (float& v : w) v = static_cast<float>(rng.uniform(-0.3, 0.3));
  for (int64_t j = 0; j < per; ++j) w[static_cast<size_t>(per + j)] = 0.f;
  w[2 * per + 3] = 7.5f;
  w[3 * per + 1] = -2.f;
  const std::vector<float> bias{0.3f, -0.2f, 5.f, -1e-4f};
  const float input_scale = 0.02f;
  const QuantizedWeights q = quantize_weights(w, bias, rows, input_scale);
  ASSERT_EQ(q.weight.size(), w.size());
  ASSERT_EQ(q.weight_scale.size(), 4u);
  ASSERT_EQ(q.bias.size(), 4u);
  ASSERT_EQ(q.bias_scale.size(), 4u);
  for (size_t k = 0; k < 4; ++k) {
    float largest = 0;
    for (size_t j = 0; j < per; ++j) largest = std::max(largest, std::fabs(w[k * per + j]));
    const float s = largest > 0 ? largest / 127.f : 1.f;
    EXPECT_EQ(q.weight_scale[k], s) << "row " << k;
    bool reaches_127 = false;
    for (size_t j = 0; j < per; ++j) {
      const size_t i = k * per + j;
      ASSERT_GE(q.weight[i], -127) << i;
      ASSERT_LE(q.weight[i], 127) << i;
      EXPECT_EQ(q.weight[i], static_cast<int8_t>(std::nearbyint(static_cast<double>(w[i]) / s)))
          << i;
      const double back = static_cast<double>(q.weight[i]) * s;
      EXPECT_LE(std::fabs(back - w[i]), 0.5 * s * (1 + 1e-6)) << i;
      reaches_127 = reaches_127 || std::abs(q.weight[i]) == 127;
    }
    EXPECT_EQ(reaches_127, largest > 0) << "row " << k;
    EXPECT_EQ(q.bias_scale[k], input_scale * s) << k;
    const double want = std::nearbyint(static_cast<double>(bias[k]) /
                                       static_cast<double>(input_scale * s));
    EXPECT_EQ(q.bias[k], static_cast<int32_t>(want)) << "bias " << k;
  }
  EXPECT_EQ(q.weight_scale[1], 1.f);  // the all-zero row
  for (size_t j = 0; j < per; ++j) EXPECT_EQ(q.weight[per + j], 0);
  EXPECT_EQ(q.weight[2 * per + 3], 127);
  EXPECT_EQ(q.weight[3 * per + 1], -127);
  // bias[1] on the all-zero row: scale input_scale * 1.
  EXPECT_EQ(q.bias[1], static_cast<int32_t>(std::nearbyint(-0.2 / static_cast<double>(0.02f))));

  // No bias: zeros.
  const QuantizedWeights none = quantize_weights(w, {}, rows, input_scale);
  EXPECT_EQ(none.bias, std::vector<int32_t>(4, 0));
  EXPECT_EQ(none.weight, q.weight);
}

TEST(QuantizeWeights, ABiasBeyondInt32WidensTheWeightScaleInsteadOfSaturating) {
  // A folded channel with a tiny gamma: weights ~1e-7 (s_w ~ 1e-9), bias 3 at input scale
  // 0.02 would need ~1.5e11 steps of int32. Once clamped to INT32_MAX silently (a wrong
  // bias: LeNet-BN's int8 accuracy fell 5 points); now s_w widens until the bias fits.
  const int64_t rows = 3, per = 4;
  std::vector<float> w{1e-7f, -2e-7f, 5e-8f, 0.f,  0.1f, -0.2f, 0.05f, 0.3f,
                       1e-7f, 1e-7f, -1e-7f, 0.f};
  const std::vector<float> bias{3.f, 0.5f, -1e30f};
  const float input_scale = 0.02f;
  const QuantizedWeights q = quantize_weights(w, bias, rows, input_scale);
  for (size_t k = 0; k < 3; ++k) {
    EXPECT_GT(q.bias[k], std::numeric_limits<int32_t>::min()) << k;
    EXPECT_LT(q.bias[k], std::numeric_limits<int32_t>::max()) << k;
    EXPECT_EQ(q.bias_scale[k], input_scale * q.weight_scale[k]) << k;
    const double back = static_cast<double>(q.bias[k]) * q.bias_scale[k];
    EXPECT_LE(std::fabs(back - bias[k]), 0.5 * q.bias_scale[k] * (1 + 1e-6) + 1e-6 * std::fabs(bias[k]))
        << "bias " << k;
    for (size_t j = 0; j < per; ++j) {
      const double wback = static_cast<double>(q.weight[k * per + j]) * q.weight_scale[k];
      EXPECT_LE(std::fabs(wback - w[k * per + j]), 0.5 * q.weight_scale[k] * (1 + 1e-6));
    }
  }
  EXPECT_GT(q.weight_scale[0], 1e-7f / 127.f);  // widened
  EXPECT_EQ(q.weight_scale[1], 0.3f / 127.f);   // this row's bias fits: untouched
}

// A folded lenet-bn in eval mode, with statistics that make its logits vary.
std::unique_ptr<nn::Sequential<float>> folded_lenet_bn(uint64_t seed) {
  auto model = nn::make_model<float>("lenet-bn", seed);
  randomize_batch_norms(*model, seed + 1);
  model->set_training(false);
  fold_batch_norms(*model);
  return model;
}

TEST(Calibrate, RefusesBadOptionsTrainingModeAndUnfoldedModels) {
  const data::ImageDataset d = tiny_dataset(8, 1);
  auto model = folded_lenet_bn(2);
  auto expect_refused = [&](nn::Sequential<float>& m, const CalibrationOptions& o,
                            const std::string& needle) {
    try {
      calibrate(m, d, o);
      ADD_FAILURE() << "no error; expected one containing " << needle;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  CalibrationOptions o;
  o.examples = 0;
  expect_refused(*model, o, "calibration-examples must be >= 1");
  o.examples = -3;
  expect_refused(*model, o, "calibration-examples must be >= 1");
  o.examples = 9;
  expect_refused(*model, o, "exceeds the 8 training examples");
  o.examples = 8;
  o.method = Calibration::percentile;
  o.percentile = 50;
  expect_refused(*model, o, "--percentile");
  o.percentile = 100.5;
  expect_refused(*model, o, "--percentile");
  o = CalibrationOptions{};
  o.examples = 8;
  model->set_training(true);
  expect_refused(*model, o, "training mode");
  model->set_training(false);
  EXPECT_NO_THROW(calibrate(*model, d, o));

  auto unfolded = nn::make_model<float>("lenet-bn", 2);
  unfolded->set_training(false);
  expect_refused(*unfolded, o, "fold it first");
}

TEST(Calibrate, MinMaxPlanOfAFoldedLeNetBn) {
  const int64_t n = 12;
  const data::ImageDataset d = tiny_dataset(n, 3);
  auto model = folded_lenet_bn(4);
  ASSERT_EQ(model->size(), 12u) << model->describe();
  CalibrationOptions o;
  o.examples = n;
  o.batch_size = 5;  // three batches: the ranges must span all of them
  const QuantizationPlan plan = calibrate(*model, d, o);
  EXPECT_EQ(plan.calibration_examples, n);
  ASSERT_EQ(plan.outputs.size(), model->size());
  ASSERT_EQ(plan.weights.size(), model->size());

  // The ranges are the smallest and largest values over all n examples.
  const nn::Tensor<float> all = images_of(d, n);
  const auto [in_lo, in_hi] = std::minmax_element(all.values().begin(), all.values().end());
  EXPECT_EQ(plan.input.low, *in_lo);
  EXPECT_EQ(plan.input.high, *in_hi);
  EXPECT_EQ(plan.input.zero_point, 0);  // pixels are >= 0
  // Each layer's output over the same batches calibration ran (5, 5, 2 examples).
  std::vector<float> lows(model->size(), std::numeric_limits<float>::infinity());
  std::vector<float> highs(model->size(), -std::numeric_limits<float>::infinity());
  for (int64_t first = 0; first < n; first += 5) {
    const int64_t count = std::min<int64_t>(5, n - first);
    nn::Tensor<float> batch(nn::Shape{count, 1, 28, 28});
    std::copy(all.data() + first * 784, all.data() + (first + count) * 784, batch.data());
    model->forward(batch);
    for (size_t i = 0; i < model->size(); ++i)
      for (float v : model->output(i).values()) {
        lows[i] = std::min(lows[i], v);
        highs[i] = std::max(highs[i], v);
      }
  }
  for (size_t i = 0; i < model->size(); ++i) {
    const bool is_last = i + 1 == model->size();
    const bool flatten = dynamic_cast<nn::Flatten<float>*>(&model->layer(i)) != nullptr;
    EXPECT_EQ(plan.outputs[i].has_value(), !is_last && !flatten)
        << i << " " << model->layer(i).describe();
    if (!plan.outputs[i]) continue;
    EXPECT_EQ(plan.outputs[i]->low, lows[i]) << i;
    EXPECT_EQ(plan.outputs[i]->high, highs[i]) << i;
    EXPECT_LT(lows[i], highs[i]) << i;
  }
  // Integer weights for exactly the conv and linear layers; each bias scale is the scale
  // of the value the layer reads (the flatten passes its input's on) times the weight's.
  float input_scale = plan.input.scale;
  for (size_t i = 0; i < model->size(); ++i) {
    nn::Layer<float>& l = model->layer(i);
    const bool has_weights = dynamic_cast<nn::Conv2d<float>*>(&l) || dynamic_cast<nn::Linear<float>*>(&l);
    ASSERT_EQ(plan.weights[i].has_value(), has_weights) << i;
    if (has_weights) {
      const QuantizedWeights& q = *plan.weights[i];
      for (size_t c = 0; c < q.bias_scale.size(); ++c)
        ASSERT_EQ(q.bias_scale[c], input_scale * q.weight_scale[c]) << "layer " << i << " channel " << c;
    }
    if (plan.outputs[i]) input_scale = plan.outputs[i]->scale;
  }
}

TEST(Calibrate, PercentileRangeIsInsideTheMinMaxRange) {
  const data::ImageDataset d = tiny_dataset(8, 5);
  auto model = folded_lenet_bn(6);
  CalibrationOptions o;
  o.examples = 8;
  const QuantizationPlan mm = calibrate(*model, d, o);
  o.method = Calibration::percentile;
  o.percentile = 99.0;
  const QuantizationPlan pc = calibrate(*model, d, o);
  EXPECT_EQ(pc.calibration, Calibration::percentile);
  bool narrower = false;
  for (size_t i = 0; i < model->size(); ++i) {
    ASSERT_EQ(mm.outputs[i].has_value(), pc.outputs[i].has_value());
    if (!mm.outputs[i]) continue;
    const float slack = 1e-5f * (mm.outputs[i]->high - mm.outputs[i]->low);
    EXPECT_GE(pc.outputs[i]->low, mm.outputs[i]->low - slack) << i;
    EXPECT_LE(pc.outputs[i]->high, mm.outputs[i]->high + slack) << i;
    narrower = narrower || pc.outputs[i]->scale < mm.outputs[i]->scale;
  }
  EXPECT_TRUE(narrower) << "the 99th percentile clipped nothing anywhere";
}

TEST(Simulate, FoldedLeNetBnStaysCloseToTheFloatModel) {
  const int64_t n = 32;
  const data::ImageDataset d = tiny_dataset(n, 7);
  auto model = folded_lenet_bn(8);
  const nn::Tensor<float> x = images_of(d, n);
  const nn::Tensor<float> reference = model->forward(x);
  CalibrationOptions o;
  o.examples = n;
  const QuantizationPlan plan = calibrate(*model, d, o);
  const size_t layers = model->size();
  int quantized_outputs = 0;
  for (const auto& q : plan.outputs) quantized_outputs += q.has_value();

  simulate(*model, plan);
  EXPECT_EQ(model->size(), layers + 1 + static_cast<size_t>(quantized_outputs));
  EXPECT_EQ((count_layers<FakeQuantize>(*model)), 1 + quantized_outputs);
  auto* first = dynamic_cast<FakeQuantize*>(&model->layer(0));
  ASSERT_NE(first, nullptr) << model->describe();
  EXPECT_EQ(first->quantization().scale, plan.input.scale);
  // The last layer (the logits) stays float: no FakeQuantize after it.
  EXPECT_EQ(dynamic_cast<FakeQuantize*>(&model->layer(model->size() - 1)), nullptr);
  // The first conv's weights are the plan's integers times their scales.
  auto* conv = dynamic_cast<nn::Conv2d<float>*>(&model->layer(1));
  ASSERT_NE(conv, nullptr) << model->describe();
  const QuantizedWeights& q0 = *plan.weights[0];
  const size_t per = conv->weight().size() / conv->bias().size();
  for (size_t i = 0; i < conv->weight().size(); ++i)
    ASSERT_EQ(conv->weight()[i], static_cast<float>(q0.weight[i]) * q0.weight_scale[i / per]) << i;
  for (size_t c = 0; c < conv->bias().size(); ++c)
    ASSERT_EQ(conv->bias()[c], static_cast<float>(q0.bias[c]) * q0.bias_scale[c]) << c;

  const nn::Tensor<float> out = model->forward(x);
  ASSERT_EQ(out.shape(), reference.shape());
  const double err = max_relative_difference(out.values(), reference.values());
  EXPECT_GT(err, 0.0) << "nothing was quantized";
  EXPECT_LT(err, 0.05) << "int8 simulation far from the float model";
  int agree = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* a = out.data() + i * 10;
    const float* b = reference.data() + i * 10;
    agree += std::max_element(a, a + 10) - a == std::max_element(b, b + 10) - b;
  }
  EXPECT_GE(agree, n * 9 / 10) << agree << " of " << n << " argmaxes agree";

  // A plan for another model is refused.
  auto other = folded_lenet_bn(9);
  other->erase(other->size() - 1);
  EXPECT_THROW(simulate(*other, plan), std::invalid_argument);
}


// A model calibrate() accepts whose linear layer has no bias (a hand-built one, not
// folded): the plan gives it an int32 bias of zeros, and simulate() must take that plan
// for the model it was made for.
TEST(Simulate, TakesThePlanOfALayerWithoutBias) {
  nn::Sequential<float> model;
  model.emplace<nn::Flatten<float>>();
  auto& linear = model.emplace<nn::Linear<float>>(784, 10, false);
  nn::Rng rng(41);
  for (float& v : linear.weight()) v = static_cast<float>(rng.uniform(-0.1, 0.1));
  model.set_training(false);
  const data::ImageDataset d = tiny_dataset(8, 42);
  const nn::Tensor<float> x = images_of(d, 8);
  const nn::Tensor<float> reference = model.forward(x);
  CalibrationOptions o;
  o.examples = 8;
  const QuantizationPlan plan = calibrate(model, d, o);
  ASSERT_TRUE(plan.weights[1].has_value());
  EXPECT_EQ(plan.weights[1]->bias, std::vector<int32_t>(10, 0));
  // The exporter takes this plan for this model (a zero int32 bias behind DequantizeLinear).
  OnnxExportOptions options;
  options.quantization = &plan;
  EXPECT_NO_THROW(export_onnx(model, options));
  // And the engine simulates it (once refused: the layer's empty bias span was compared
  // with the plan's per-channel zero bias).
  simulate(model, plan);
  const nn::Tensor<float> out = model.forward(x);
  EXPECT_LT(max_relative_difference(out.values(), reference.values()), 0.05);
}

}  // namespace
}  // namespace bnorm::deploy
