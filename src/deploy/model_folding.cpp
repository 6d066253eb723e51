#include "deploy/model_folding.h"

#include <bnorm/bnorm.hpp>

#include <cmath>
#include <memory>
#include <stdexcept>
#include <utility>

#include "nn/batch_norm_layer.h"
#include "nn/channel_affine.h"
#include "nn/conv2d.h"
#include "nn/linear.h"

namespace bnorm::deploy {

std::string FoldReport::summary() const {
  std::string s;
  if (folded.empty() && kept_as_affine.empty()) return "no batch norm to fold\n";
  s += "folded " + std::to_string(folded.size()) + " batch norm layer" +
       (folded.size() == 1 ? "" : "s") + (folded.empty() ? "\n" : ":\n");
  for (const auto& f : folded) s += "  " + f + "\n";
  if (!kept_as_affine.empty()) {
    s += "could not fold " + std::to_string(kept_as_affine.size()) +
         " (not right after a convolution or linear layer):\n";
    for (const auto& k : kept_as_affine) s += "  " + k + "\n";
  }
  return s;
}

namespace {

template <class T>
TensorView<const T> const_view(std::span<T> values, std::vector<int64_t> sizes) {
  return {values.data(), std::move(sizes), Layout::channels_first};
}

// The layer before a BatchNorm, when batch norm can fold into it: its weight (output
// channels first) and bias (empty when it has none), and the channel count.
template <class T>
struct FoldTarget {
  std::span<T> weight, bias;
  std::vector<int64_t> weight_sizes;
  int64_t out_channels = 0;
};

template <class T>
bool fold_target(nn::Layer<T>& layer, FoldTarget<T>& t) {
  if (auto* conv = dynamic_cast<nn::Conv2d<T>*>(&layer)) {
    const nn::Conv2dOptions& o = conv->options();
    t = {conv->weight(), conv->bias(), {o.out_channels, o.in_channels, o.kernel_size, o.kernel_size},
         o.out_channels};
    return true;
  }
  if (auto* linear = dynamic_cast<nn::Linear<T>*>(&layer)) {
    t = {linear->weight(), linear->bias(), {linear->fan_out(), linear->fan_in()},
         linear->fan_out()};
    return true;
  }
  return false;
}

// The same layer with a bias (zero), its weight copied: folding gives every output
// channel a bias even where the layer had none.
template <class T>
std::unique_ptr<nn::Layer<T>> with_bias(nn::Layer<T>& layer) {
  if (auto* conv = dynamic_cast<nn::Conv2d<T>*>(&layer)) {
    nn::Conv2dOptions o = conv->options();
    o.bias = true;
    auto out = std::make_unique<nn::Conv2d<T>>(o);
    std::copy(conv->weight().begin(), conv->weight().end(), out->weight().begin());
    return out;
  }
  auto& linear = dynamic_cast<nn::Linear<T>&>(layer);
  auto out = std::make_unique<nn::Linear<T>>(linear.fan_in(), linear.fan_out(), true);
  std::copy(linear.weight().begin(), linear.weight().end(), out->weight().begin());
  return out;
}

}  // namespace

template <class T>
FoldReport fold_batch_norms(nn::Sequential<T>& model) {
  if (model.is_training())
    throw std::invalid_argument(
        "fold batch norm: the model is in training mode, where batch norm normalizes with "
        "each batch's own statistics and no weight can hold it; fold an eval-mode model");
  // Every refusal before the first change: a model is folded whole or not at all.
  for (size_t i = 0; i < model.size(); ++i) {
    auto* bn = dynamic_cast<nn::BatchNormLayer<T>*>(&model.layer(i));
    if (!bn) continue;
    const std::string layer =
        "fold batch norm: layer " + std::to_string(i) + " (" + bn->describe() + ")";
    if (!bn->module().options().track_running_stats)
      throw std::invalid_argument(layer +
                                  " keeps no running statistics, so it normalizes with the "
                                  "batch's own in eval mode too and cannot fold");
    // A negative variance has no square root: a corrupted statistic, not one to fold.
    // NaN passes: it makes its own channel NaN, visibly (as bnorm::fold_batch_norm does).
    const std::span<const T> var = bn->module().running_var();
    for (size_t k = 0; k < var.size(); ++k)
      if (static_cast<double>(var[k]) + bn->module().options().eps <= 0)
        throw std::invalid_argument(layer + ": running_var[" + std::to_string(k) +
                                    "] + eps must be > 0, got " + std::to_string(var[k]) +
                                    " + " + std::to_string(bn->module().options().eps));
  }
  FoldReport report;
  // origin[i]: the index layer i had before folding (the report speaks of those).
  std::vector<size_t> origin(model.size());
  for (size_t i = 0; i < origin.size(); ++i) origin[i] = i;
  for (size_t i = 0; i < model.size(); ++i) {
    const size_t original = origin[i];
    auto* bn = dynamic_cast<nn::BatchNormLayer<T>*>(&model.layer(i));
    if (!bn) continue;
    BatchNorm<T>& m = bn->module();
    const int64_t c = m.num_features();
    const double eps = m.options().eps;
    const std::span<const T> gamma = m.weight(), beta = m.bias();
    FoldTarget<T> target;
    if (i > 0 && fold_target(model.layer(i - 1), target) && target.out_channels == c) {
      const std::string what = std::to_string(original) + "." + bn->describe() + " into " +
                               std::to_string(origin[i - 1]) + "." + model.layer(i - 1).describe();
      if (target.bias.empty()) {
        model.replace(i - 1, with_bias(model.layer(i - 1)));
        fold_target(model.layer(i - 1), target);
      }
      fold_batch_norm<T>(const_view(target.weight, target.weight_sizes), target.bias,
                         m.running_mean(), m.running_var(), gamma, beta, eps,
                         TensorView<T>{target.weight.data(), target.weight_sizes,
                                       Layout::channels_first},
                         target.bias);
      model.erase(i);
      origin.erase(origin.begin() + static_cast<std::ptrdiff_t>(i));
      --i;
      report.folded.push_back(what);
      continue;
    }
    // scale = gamma / sqrt(var + eps), shift = beta - mean * scale, in double.
    std::vector<T> scale(static_cast<size_t>(c)), shift(static_cast<size_t>(c));
    for (int64_t k = 0; k < c; ++k) {
      const auto ks = static_cast<size_t>(k);
      const double var = static_cast<double>(m.running_var()[ks]);  // + eps > 0: checked above
      const double s = (gamma.empty() ? 1.0 : static_cast<double>(gamma[ks])) / std::sqrt(var + eps);
      scale[ks] = static_cast<T>(s);
      shift[ks] = static_cast<T>((beta.empty() ? 0.0 : static_cast<double>(beta[ks])) -
                                 static_cast<double>(m.running_mean()[ks]) * s);
    }
    const std::string before = i > 0 ? std::to_string(origin[i - 1]) + "." +
                                           model.layer(i - 1).describe()
                                     : std::string("the input");
    const std::string was = std::to_string(original) + "." + bn->describe();
    model.replace(i, std::make_unique<nn::ChannelAffine<T>>(std::move(scale), std::move(shift)));
    report.kept_as_affine.push_back(was + " after " + before + ": kept as " + std::to_string(i) +
                                    "." + model.layer(i).describe());
  }
  return report;
}

template FoldReport fold_batch_norms<float>(nn::Sequential<float>&);
template FoldReport fold_batch_norms<double>(nn::Sequential<double>&);

}  // namespace bnorm::deploy
