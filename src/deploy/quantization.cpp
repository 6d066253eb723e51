#include "deploy/quantization.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <stdexcept>

#include "deploy/fake_quantize.h"
#include "nn/activations.h"
#include "nn/batch_norm_layer.h"
#include "nn/channel_affine.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/pooling.h"
#include "nn/replica_evaluation.h"
#include "nn/reshape.h"

namespace bnorm::deploy {

// ---- FakeQuantize ---------------------------------------------------------------------

std::string FakeQuantize::describe() const {
  char s[96];
  std::snprintf(s, sizeof s, "FakeQuantize(scale=%.6g, zero_point=%d)", q_.scale, q_.zero_point);
  return s;
}

void FakeQuantize::forward(const nn::Tensor<float>& x, nn::Tensor<float>& y) {
  const int64_t n = x.numel();
  const float* in = x.data();
  float* out = y.data();
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) out[i] = fake_quantize(in[i], q_);
}

void FakeQuantize::backward(const nn::Tensor<float>& x, const nn::Tensor<float>& /*y*/,
                            const nn::Tensor<float>& dy, nn::Tensor<float>* dx) {
  if (!dx) return;
  // Inside the range: -z * s <= x <= (255 - z) * s.
  const float lo = -static_cast<float>(q_.zero_point) * q_.scale;
  const float hi = (255.f - static_cast<float>(q_.zero_point)) * q_.scale;
  for (int64_t i = 0; i < x.numel(); ++i)
    dx->data()[i] = x.data()[i] >= lo && x.data()[i] <= hi ? dy.data()[i] : 0.f;
}

// ---- the plan -------------------------------------------------------------------------

ActivationQuantization activation_quantization(float low, float high) {
  ActivationQuantization a;
  a.low = low;
  a.high = high;
  const float lo = std::min(low, 0.f), hi = std::max(high, 0.f);
  if (!(std::isfinite(lo) && std::isfinite(hi)))
    throw std::invalid_argument("quantize: a calibrated range is not finite (" + std::to_string(low) +
                                ", " + std::to_string(high) + "): the model computes NaN or "
                                "infinity on the calibration examples");
  if (hi - lo <= 0) return a;  // all zero: scale 1, zero point 0 keep it exactly
  a.scale = (hi - lo) / 255.f;
  const float z = std::nearbyint(-lo / a.scale);
  a.zero_point = static_cast<uint8_t>(std::clamp(z, 0.f, 255.f));
  return a;
}

QuantizedWeights quantize_weights(std::span<const float> weight, std::span<const float> bias,
                                  int64_t out_channels, float input_scale) {
  QuantizedWeights q;
  const auto c = static_cast<size_t>(out_channels);
  const size_t per = weight.size() / c;
  q.weight.resize(weight.size());
  q.weight_scale.resize(c);
  q.bias.resize(c);
  q.bias_scale.resize(c);
  for (size_t k = 0; k < c; ++k) {
    float largest = 0;
    for (size_t j = 0; j < per; ++j) largest = std::max(largest, std::fabs(weight[k * per + j]));
    float s = largest > 0 ? largest / 127.f : 1.f;
    // The bias must fit int32 at scale input_scale * s. A folded channel with a tiny gamma
    // has tiny weights (tiny s) but a bias near beta, which would saturate: widen s until
    // it fits (the weights then use fewer of their 255 steps; onnxruntime's quantizer
    // does the same), rather than clamp the bias to a wrong value.
    const double b = bias.empty() ? 0.0 : static_cast<double>(bias[k]);
    constexpr double kInt32Max = 2147483647.0;
    const double needed = std::fabs(b) / (static_cast<double>(input_scale) * kInt32Max);
    if (needed > static_cast<double>(s)) s = std::nextafter(static_cast<float>(needed), INFINITY);
    q.weight_scale[k] = s;
    for (size_t j = 0; j < per; ++j) {
      const float v = std::clamp(std::nearbyint(weight[k * per + j] / s), -127.f, 127.f);
      q.weight[k * per + j] = static_cast<int8_t>(v);
    }
    q.bias_scale[k] = input_scale * s;
    const double v = std::nearbyint(b / static_cast<double>(q.bias_scale[k]));
    q.bias[k] = static_cast<int32_t>(std::clamp(v, -kInt32Max - 1, kInt32Max));
  }
  return q;
}

namespace {

// Whether a layer's output gets its own quantization: not for layers whose outputs are
// some of their input's values (flatten, dropout at inference, max pooling), which are
// already on the input's grid.
bool changes_values(nn::Layer<float>& layer) {
  return !dynamic_cast<nn::Flatten<float>*>(&layer) && !dynamic_cast<nn::Dropout<float>*>(&layer) &&
         !dynamic_cast<nn::MaxPool2d<float>*>(&layer);
}

void check_quantizable(nn::Sequential<float>& model) {
  for (size_t i = 0; i < model.size(); ++i) {
    nn::Layer<float>& l = model.layer(i);
    if (dynamic_cast<nn::BatchNormLayer<float>*>(&l))
      throw std::invalid_argument("quantize: layer " + std::to_string(i) + " (" + l.describe() +
                                  ") is batch norm: fold it first (fold_batch_norms)");
    const bool known = dynamic_cast<nn::Conv2d<float>*>(&l) || dynamic_cast<nn::Linear<float>*>(&l) ||
                       dynamic_cast<nn::Elementwise<float>*>(&l) ||
                       dynamic_cast<nn::Pool2d<float>*>(&l) || dynamic_cast<nn::Flatten<float>*>(&l) ||
                       dynamic_cast<nn::Dropout<float>*>(&l) ||
                       dynamic_cast<nn::ChannelAffine<float>*>(&l);
    if (!known)
      throw std::invalid_argument("quantize: layer " + std::to_string(i) + " (" + l.describe() +
                                  ") has no int8 form here (conv, linear, activations, pools, "
                                  "flatten, dropout and folded batch norm do)");
  }
}

// Per quantization point (0: the input, 1 + i: layer i's output): the values' range,
// and with the percentile method a histogram over it.
struct Observer {
  float low = std::numeric_limits<float>::infinity();
  float high = -std::numeric_limits<float>::infinity();
  std::vector<int64_t> bins;
  static constexpr int kBins = 4096;

  void see_range(const float* v, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      if (std::isnan(v[i]))
        throw std::invalid_argument("quantize: the model computes NaN on the calibration examples");
      low = std::min(low, v[i]);
      high = std::max(high, v[i]);
    }
  }
  void see_histogram(const float* v, int64_t n) {
    if (bins.empty()) bins.assign(kBins, 0);
    const double width = (static_cast<double>(high) - low) / kBins;
    if (width <= 0) return;
    for (int64_t i = 0; i < n; ++i) {
      const auto b = static_cast<int64_t>((static_cast<double>(v[i]) - low) / width);
      ++bins[static_cast<size_t>(std::clamp<int64_t>(b, 0, kBins - 1))];
    }
  }
  // [value below which (100 - p)% of the values lie, value below which p% lie], on bin edges.
  std::pair<float, float> percentile_range(double p) const {
    int64_t total = 0;
    for (int64_t c : bins) total += c;
    if (total == 0) return {low, high};
    const double width = (static_cast<double>(high) - low) / kBins;
    const double tail = static_cast<double>(total) * (100.0 - p) / 100.0;
    int64_t seen = 0;
    size_t lo_bin = 0, hi_bin = bins.size() - 1;
    for (size_t b = 0; b < bins.size(); ++b) {
      seen += bins[b];
      if (static_cast<double>(seen) > tail) { lo_bin = b; break; }
    }
    seen = 0;
    for (size_t b = bins.size(); b-- > 0;) {
      seen += bins[b];
      if (static_cast<double>(seen) > tail) { hi_bin = b; break; }
    }
    return {static_cast<float>(low + width * static_cast<double>(lo_bin)),
            static_cast<float>(low + width * static_cast<double>(hi_bin + 1))};
  }
};

}  // namespace

QuantizationPlan calibrate(nn::Sequential<float>& model, const data::ImageDataset& train,
                           const CalibrationOptions& o) {
  if (model.is_training())
    throw std::invalid_argument("quantize: the model is in training mode; calibrate an eval-mode model");
  if (o.examples < 1)
    throw std::invalid_argument("quantize: --calibration-examples must be >= 1, got " +
                                std::to_string(o.examples));
  if (o.examples > train.count)
    throw std::invalid_argument("quantize: --calibration-examples " + std::to_string(o.examples) +
                                " exceeds the " + std::to_string(train.count) +
                                " training examples");
  if (o.method == Calibration::percentile && !(o.percentile > 50 && o.percentile <= 100))
    throw std::invalid_argument("quantize: --percentile must be in (50, 100], got " +
                                std::to_string(o.percentile));
  if (o.batch_size < 1) throw std::invalid_argument("quantize: batch size must be >= 1");
  check_quantizable(model);
  const size_t n_layers = model.size();
  std::vector<Observer> obs(n_layers + 1);
  nn::Tensor<float> batch;
  std::vector<int32_t> labels;
  const std::vector<int64_t> in_order;
  const int passes = o.method == Calibration::percentile ? 2 : 1;
  // Point p: 0 the network input, 1 + i layer i's output (for the messages).
  const auto point_name = [&model](size_t p) {
    return p == 0 ? std::string("the network input")
                  : "the output of layer " + std::to_string(p - 1) + " (" +
                        model.layer(p - 1).describe() + ")";
  };
  const auto quantization_at = [&](size_t p, float lo, float hi) {
    try {
      return activation_quantization(lo, hi);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string(e.what()) + " (at " + point_name(p) + ")");
    }
  };
  for (int pass = 0; pass < passes; ++pass) {
    for (int64_t first = 0; first < o.examples; first += o.batch_size) {
      nn::gather_examples(train, in_order, first, std::min(o.examples, first + o.batch_size),
                          batch, labels);
      model.forward(batch);
      for (size_t p = 0; p <= n_layers; ++p) {
        const nn::Tensor<float>& t = p == 0 ? batch : model.output(p - 1);
        try {
          if (pass == 0)
            obs[p].see_range(t.data(), t.numel());
          else
            obs[p].see_histogram(t.data(), t.numel());
        } catch (const std::invalid_argument& e) {
          throw std::invalid_argument(std::string(e.what()) + " (first at " + point_name(p) + ")");
        }
      }
    }
  }
  auto range = [&](size_t p) {
    return o.method == Calibration::percentile ? obs[p].percentile_range(o.percentile)
                                               : std::pair<float, float>{obs[p].low, obs[p].high};
  };
  QuantizationPlan plan;
  plan.calibration = o.method;
  plan.percentile = o.percentile;
  plan.calibration_examples = o.examples;
  const auto [in_lo, in_hi] = range(0);
  plan.input = quantization_at(0, in_lo, in_hi);
  plan.outputs.resize(n_layers);
  plan.weights.resize(n_layers);
  float input_scale = plan.input.scale;  // the scale of the value the next layer reads
  for (size_t i = 0; i < n_layers; ++i) {
    nn::Layer<float>& l = model.layer(i);
    if (auto* conv = dynamic_cast<nn::Conv2d<float>*>(&l))
      plan.weights[i] = quantize_weights(conv->weight(), conv->bias(), conv->options().out_channels,
                                         input_scale);
    else if (auto* linear = dynamic_cast<nn::Linear<float>*>(&l))
      plan.weights[i] = quantize_weights(linear->weight(), linear->bias(), linear->fan_out(),
                                         input_scale);
    if (i + 1 < n_layers && changes_values(l)) {
      const auto [lo, hi] = range(i + 1);
      plan.outputs[i] = quantization_at(i + 1, lo, hi);
      input_scale = plan.outputs[i]->scale;
    }
  }
  return plan;
}

void simulate(nn::Sequential<float>& model, const QuantizationPlan& plan) {
  if (plan.outputs.size() != model.size() || plan.weights.size() != model.size())
    throw std::invalid_argument("quantize: the plan is for a model of " +
                                std::to_string(plan.outputs.size()) + " layers, this one has " +
                                std::to_string(model.size()));
  // Weights first (indices still the plan's), then the FakeQuantize layers from the back;
  // every layer is checked against the plan before the first is written.
  struct Target {
    std::span<float> w, b;
    const QuantizedWeights* q;
    bool no_bias;
  };
  std::vector<Target> targets;
  for (size_t i = 0; i < model.size(); ++i) {
    if (!plan.weights[i]) continue;
    const QuantizedWeights& q = *plan.weights[i];
    std::span<float> w, b;
    if (auto* conv = dynamic_cast<nn::Conv2d<float>*>(&model.layer(i)))
      w = conv->weight(), b = conv->bias();
    else if (auto* linear = dynamic_cast<nn::Linear<float>*>(&model.layer(i)))
      w = linear->weight(), b = linear->bias();
    // A layer without bias has the plan's all-zero int32 bias (quantize_weights).
    const bool no_bias = b.empty() && std::all_of(q.bias.begin(), q.bias.end(),
                                                  [](int32_t v) { return v == 0; });
    const size_t channels = q.weight_scale.size();
    if (w.size() != q.weight.size() || channels == 0 || (!no_bias && b.size() != channels))
      throw std::invalid_argument("quantize: layer " + std::to_string(i) +
                                  " does not match the plan's weights");
    targets.push_back({w, b, &q, no_bias});
  }
  for (const Target& t : targets) {
    const QuantizedWeights& q = *t.q;
    const size_t channels = q.weight_scale.size(), per = t.w.size() / channels;
    for (size_t k = 0; k < channels; ++k) {
      for (size_t j = 0; j < per; ++j)
        t.w[k * per + j] = static_cast<float>(q.weight[k * per + j]) * q.weight_scale[k];
      if (!t.no_bias) t.b[k] = static_cast<float>(q.bias[k]) * q.bias_scale[k];
    }
  }
  for (size_t i = model.size(); i-- > 0;)
    if (plan.outputs[i]) model.insert(i + 1, std::make_unique<FakeQuantize>(*plan.outputs[i]));
  model.insert(0, std::make_unique<FakeQuantize>(plan.input));
}

}  // namespace bnorm::deploy
