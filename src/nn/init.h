// Weight initialization (Glorot & Bengio 2010; He et al. 2015), PyTorch's formulas:
//   xavier_uniform: U(-a, a),  a = gain * sqrt(6 / (fan_in + fan_out))
//   xavier_normal:  N(0, s^2), s = gain * sqrt(2 / (fan_in + fan_out))
//   kaiming_uniform: U(-a, a), a = gain * sqrt(3 / fan_in)   (gain sqrt(2) for ReLU)
//   kaiming_normal:  N(0, s^2), s = gain / sqrt(fan_in)
//   default_bias:    U(-1/sqrt(fan_in), 1/sqrt(fan_in))       (PyTorch's bias default)
// For a convolution fan_in = Cin*k*k and fan_out = Cout*k*k.
#pragma once

#include <cstdint>
#include <span>

#include "nn/random.h"

namespace bnorm::nn {

template <class T>
void uniform_fill(std::span<T> values, double lo, double hi, Rng& rng) {
  for (T& v : values) v = static_cast<T>(rng.uniform(lo, hi));
}

template <class T>
void normal_fill(std::span<T> values, double stddev, Rng& rng) {
  for (T& v : values) v = static_cast<T>(stddev * rng.normal());
}

template <class T>
void xavier_uniform(std::span<T> w, int64_t fan_in, int64_t fan_out, Rng& rng, double gain = 1) {
  const double a = gain * std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
  uniform_fill(w, -a, a, rng);
}

template <class T>
void xavier_normal(std::span<T> w, int64_t fan_in, int64_t fan_out, Rng& rng, double gain = 1) {
  normal_fill(w, gain * std::sqrt(2.0 / static_cast<double>(fan_in + fan_out)), rng);
}

template <class T>
void kaiming_uniform(std::span<T> w, int64_t fan_in, Rng& rng, double gain = std::sqrt(2.0)) {
  const double a = gain * std::sqrt(3.0 / static_cast<double>(fan_in));
  uniform_fill(w, -a, a, rng);
}

template <class T>
void kaiming_normal(std::span<T> w, int64_t fan_in, Rng& rng, double gain = std::sqrt(2.0)) {
  normal_fill(w, gain / std::sqrt(static_cast<double>(fan_in)), rng);
}

template <class T>
void default_bias(std::span<T> b, int64_t fan_in, Rng& rng) {
  const double a = 1.0 / std::sqrt(static_cast<double>(fan_in));
  uniform_fill(b, -a, a, rng);
}

}  // namespace bnorm::nn
