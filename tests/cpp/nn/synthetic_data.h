// A small learnable image set for engine tests: 1x28x28 images whose label is the
// quadrant-and-stripe pattern drawn into them, plus noise. Deterministic per seed.
#pragma once

#include <cstdint>

#include "data/dataset.h"
#include "nn/random.h"

namespace bnorm::nn::testing {

inline data::ImageDataset synthetic_images(int64_t count, uint64_t seed) {
  data::ImageDataset d;
  d.count = count;
  d.rows = d.cols = 28;
  d.images.resize(static_cast<size_t>(count * 28 * 28));
  d.labels.resize(static_cast<size_t>(count));
  Rng rng(seed);
  for (int64_t n = 0; n < count; ++n) {
    const auto label = static_cast<int32_t>(rng.below(10));
    d.labels[static_cast<size_t>(n)] = label;
    float* img = d.images.data() + n * 28 * 28;
    for (int64_t i = 0; i < 28 * 28; ++i) img[i] = static_cast<float>(0.2 * rng.uniform());
    // A bright bar whose row and thickness encode the label.
    const int64_t row = 2 + 2 * label;
    for (int64_t r = row; r < row + 3; ++r)
      for (int64_t c = 4; c < 24; ++c) img[r * 28 + c] = 0.9f;
  }
  return d;
}

}  // namespace bnorm::nn::testing
