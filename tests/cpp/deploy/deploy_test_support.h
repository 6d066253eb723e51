// Helpers shared by the deploy tests (tests/cpp/deploy/): random inputs, batch norms
// given non-trivial statistics, a small image set, a model's state as plain numbers, and
// relative errors against a reference.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "../nn/synthetic_data.h"
#include "data/dataset.h"
#include "nn/batch_norm_layer.h"
#include "nn/random.h"
#include "nn/sequential.h"
#include "nn/tensor.h"

namespace bnorm::deploy::testing {

// Values uniform in [lo, hi), deterministic per seed.
template <class T>
nn::Tensor<T> random_tensor(const nn::Shape& shape, uint64_t seed, double lo = 0.0,
                            double hi = 1.0) {
  nn::Tensor<T> t(shape);
  nn::Rng rng(seed);
  for (T& v : t.values()) v = static_cast<T>(rng.uniform(lo, hi));
  return t;
}

// max |a - b| / max |b|: a model's logits against a reference's.
template <class A, class B>
double max_relative_difference(std::span<const A> a, std::span<const B> b) {
  EXPECT_EQ(a.size(), b.size());
  double diff = 0, scale = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
    scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

// Gives every batch norm of `model` statistics and parameters far from the defaults
// (running_mean 0, running_var 1, gamma 1, beta 0), so that forgetting any one of them
// in a fold changes the output: mean in [-0.5, 0.5], var in [0.2, 3], gamma in
// +-[0.5, 1.5] (some negative), beta in [-0.5, 0.5].
template <class T>
int randomize_batch_norms(nn::Sequential<T>& model, uint64_t seed) {
  nn::Rng rng(seed);
  int count = 0;
  for (size_t i = 0; i < model.size(); ++i) {
    auto* bn = dynamic_cast<nn::BatchNormLayer<T>*>(&model.layer(i));
    if (!bn) continue;
    ++count;
    BatchNorm<T>& m = bn->module();
    for (T& v : m.running_mean()) v = static_cast<T>(rng.uniform(-0.5, 0.5));
    for (T& v : m.running_var()) v = static_cast<T>(rng.uniform(0.2, 3.0));
    for (T& v : m.weight())
      v = static_cast<T>(rng.uniform(0.5, 1.5) * (rng.uniform() < 0.25 ? -1.0 : 1.0));
    for (T& v : m.bias()) v = static_cast<T>(rng.uniform(-0.5, 0.5));
  }
  return count;
}

template <class L, class T>
int count_layers(nn::Sequential<T>& model) {
  int n = 0;
  for (size_t i = 0; i < model.size(); ++i) n += dynamic_cast<L*>(&model.layer(i)) != nullptr;
  return n;
}

// Every parameter and buffer value of a model, in state order (to check a refused
// rewrite changed nothing).
template <class T>
std::vector<T> state_values(nn::Sequential<T>& model) {
  std::vector<T> out;
  const nn::StateLists<T> s = model.state();
  for (const auto& p : s.parameters) out.insert(out.end(), p.value.begin(), p.value.end());
  for (const auto& b : s.buffers) out.insert(out.end(), b.value.begin(), b.value.end());
  return out;
}

template <class T>
std::vector<std::string> layer_descriptions(const nn::Sequential<T>& model) {
  std::vector<std::string> out;
  for (size_t i = 0; i < model.size(); ++i) out.push_back(model.layer(i).describe());
  return out;
}

// A small image set: nn::testing::synthetic_images (tests/cpp/nn/synthetic_data.h).
inline data::ImageDataset tiny_dataset(int64_t count, uint64_t seed) {
  return nn::testing::synthetic_images(count, seed);
}

// The first `count` images of a data set as one (count, 1, 28, 28) batch.
inline nn::Tensor<float> images_of(const data::ImageDataset& d, int64_t count) {
  nn::Tensor<float> t(nn::Shape{count, 1, 28, 28});
  std::copy(d.images.begin(), d.images.begin() + count * 28 * 28, t.data());
  return t;
}

}  // namespace bnorm::deploy::testing
