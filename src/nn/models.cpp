#include "nn/models.h"

#include <algorithm>
#include <stdexcept>
#include <utility>

#include "nn/activations.h"
#include "nn/batch_norm_layer.h"
#include "nn/conv2d.h"
#include "nn/init.h"
#include "nn/linear.h"
#include "nn/norm_layers.h"
#include "nn/pooling.h"
#include "nn/random.h"
#include "nn/reshape.h"

namespace bnorm::nn {

namespace {

enum class Init { xavier, kaiming };

// Which normalization a model puts after its conv and linear layers: the model name's
// suffix (-bn, -ln, -gn, -in), none without one.
enum class Norm { none, batch, layer, group, instance };

template <class T>
class Builder {
 public:
  Builder(Sequential<T>& model, Init init, uint64_t seed) : m_(model), init_(init), rng_(seed) {}

  void conv(int64_t in, int64_t out, int64_t k, int64_t padding = 0) {
    auto& c = m_.template emplace<Conv2d<T>>(Conv2dOptions{in, out, k, 1, padding, true});
    init_weight(c.weight(), c.fan_in(), c.fan_out());
    default_bias(c.bias(), c.fan_in(), rng_);
  }
  void linear(int64_t in, int64_t out) {
    auto& l = m_.template emplace<Linear<T>>(in, out);
    init_weight(l.weight(), l.fan_in(), l.fan_out());
    default_bias(l.bias(), l.fan_in(), rng_);
  }
  void bn2d(int64_t c) { m_.template emplace<BatchNormLayer<T>>(c, 2); }
  void bn1d(int64_t c) { m_.template emplace<BatchNormLayer<T>>(c, 0); }
  // The normalization of a (N, c, h, w) conv output: batch norm per channel, layer norm
  // over (c, h, w), group norm with `groups`, instance norm (affine) per channel.
  void norm2d(Norm kind, int64_t c, int64_t h, int64_t w, int64_t groups) {
    switch (kind) {
      case Norm::none: break;
      case Norm::batch: bn2d(c); break;
      case Norm::layer: m_.template emplace<NormLayer<T>>(LayerNorm<T>({c, h, w})); break;
      case Norm::group: m_.template emplace<NormLayer<T>>(GroupNorm<T>(groups, c)); break;
      case Norm::instance:
        m_.template emplace<NormLayer<T>>(InstanceNorm<T>(c, {1e-5, 0.1, true, false}));
        break;
    }
  }
  // The normalization of a (N, f) linear output. Instance norm has no axis to normalize
  // over in a vector: a layer without it.
  void norm1d(Norm kind, int64_t f, int64_t groups) {
    switch (kind) {
      case Norm::none: case Norm::instance: break;
      case Norm::batch: bn1d(f); break;
      case Norm::layer: m_.template emplace<NormLayer<T>>(LayerNorm<T>({f})); break;
      case Norm::group: m_.template emplace<NormLayer<T>>(GroupNorm<T>(groups, f)); break;
    }
  }
  void act(Activation a) { m_.template emplace<Elementwise<T>>(a); }
  void avgpool(int64_t k) { m_.template emplace<AvgPool2d<T>>(k); }
  void maxpool(int64_t k) { m_.template emplace<MaxPool2d<T>>(k); }
  void flatten() { m_.template emplace<Flatten<T>>(); }
  void dropout(double p) { m_.template emplace<Dropout<T>>(p, rng_.next()); }

 private:
  void init_weight(std::span<T> w, int64_t fan_in, int64_t fan_out) {
    if (init_ == Init::xavier)
      xavier_uniform(w, fan_in, fan_out, rng_);
    else
      kaiming_uniform(w, fan_in, rng_);
  }

  Sequential<T>& m_;
  Init init_;
  Rng rng_;
};

// d2l's LeNet; with a normalization, the seed's layout (no padding, a norm after every
// conv and hidden linear layer, before the sigmoid).
template <class T>
void lenet(Builder<T>& b, Norm norm) {
  const auto sig = Activation::sigmoid;
  if (norm != Norm::none) {
    b.conv(1, 6, 5), b.norm2d(norm, 6, 24, 24, 2), b.act(sig), b.avgpool(2);
    b.conv(6, 16, 5), b.norm2d(norm, 16, 8, 8, 4), b.act(sig), b.avgpool(2);
    b.flatten();
    b.linear(256, 120), b.norm1d(norm, 120, 4), b.act(sig);
    b.linear(120, 84), b.norm1d(norm, 84, 4), b.act(sig);
    b.linear(84, 10);
  } else {
    b.conv(1, 6, 5, 2), b.act(sig), b.avgpool(2);
    b.conv(6, 16, 5), b.act(sig), b.avgpool(2);
    b.flatten();
    b.linear(400, 120), b.act(sig);
    b.linear(120, 84), b.act(sig);
    b.linear(84, 10);
  }
}

template <class T>
void mlp(Builder<T>& b, Norm norm) {
  const auto relu = Activation::relu;
  b.flatten();
  b.linear(784, 256);
  b.norm1d(norm, 256, 8);
  b.act(relu);
  b.linear(256, 256);
  b.norm1d(norm, 256, 8);
  b.act(relu);
  b.linear(256, 10);
}

template <class T>
void vgg(Builder<T>& b, bool bn) {
  const auto relu = Activation::relu;
  int64_t in = 1;
  for (int64_t width : {16, 32}) {
    for (int rep = 0; rep < 2; ++rep) {
      b.conv(in, width, 3, 1);
      if (bn) b.bn2d(width);
      b.act(relu);
      in = width;
    }
    b.maxpool(2);
  }
  b.flatten();
  b.linear(32 * 7 * 7, 128);
  if (bn) b.bn1d(128);
  b.act(relu);
  b.dropout(0.5);
  b.linear(128, 10);
}

}  // namespace

const std::vector<std::string>& model_names() {
  static const std::vector<std::string> names{"lenet",    "lenet-bn", "lenet-ln", "lenet-gn",
                                              "lenet-in", "mlp",      "mlp-bn",   "mlp-ln",
                                              "vgg",      "vgg-bn"};
  return names;
}

template <class T>
std::unique_ptr<Sequential<T>> make_model(const std::string& name, uint64_t seed) {
  auto model = std::make_unique<Sequential<T>>();
  static const std::pair<const char*, Norm> suffixes[] = {
      {"-bn", Norm::batch}, {"-ln", Norm::layer}, {"-gn", Norm::group}, {"-in", Norm::instance}};
  Norm norm = Norm::none;
  std::string base = name;
  for (const auto& [suffix, kind] : suffixes)
    if (name.size() > 3 && name.substr(name.size() - 3) == suffix)
      norm = kind, base = name.substr(0, name.size() - 3);
  const bool known = std::find(model_names().begin(), model_names().end(), name) != model_names().end();
  const bool bn = norm == Norm::batch;
  if (known && base == "lenet") {
    Builder<T> b(*model, Init::xavier, seed);
    lenet(b, norm);
  } else if (known && base == "mlp") {
    Builder<T> b(*model, Init::kaiming, seed);
    mlp(b, norm);
  } else if (known && base == "vgg") {
    Builder<T> b(*model, Init::kaiming, seed);
    vgg(b, bn);
  } else {
    std::string choices;
    for (const auto& n : model_names()) choices += (choices.empty() ? "" : ", ") + n;
    throw std::invalid_argument("model: unknown name '" + name + "' (expected one of " + choices + ")");
  }
  return model;
}

template std::unique_ptr<Sequential<float>> make_model<float>(const std::string&, uint64_t);
template std::unique_ptr<Sequential<double>> make_model<double>(const std::string&, uint64_t);

}  // namespace bnorm::nn
