// Deterministic random numbers for the engine: initialization, shuffling, dropout.
//
// SplitMix64 (Steele, Lea, Flood 2014): a 64-bit counter run through a bijective
// mixer. It is defined bit for bit here, unlike std:: distributions, so a seed gives
// the same model and the same batches with any standard library. Stateless draws
// (mix(seed, stream, index)) let dropout and the per-epoch shuffle be recomputed from
// (seed, epoch, step) alone, which is what makes a resumed run equal an unbroken one.
#pragma once

#include <cmath>
#include <cstdint>
#include <numbers>

namespace bnorm::nn {

inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// A hash of (seed, stream, index): independent streams from one seed.
inline uint64_t hash3(uint64_t seed, uint64_t stream, uint64_t index) {
  return mix64(mix64(mix64(seed) ^ (stream * 0x9e3779b97f4a7c15ULL)) + index);
}

// 24 random bits as a float in [0, 1): exactly representable, never 1.
inline float unit_float(uint64_t bits) { return static_cast<float>(bits >> 40) * 0x1.0p-24f; }
// 53 random bits as a double in [0, 1).
inline double unit_double(uint64_t bits) { return static_cast<double>(bits >> 11) * 0x1.0p-53; }

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}

  uint64_t next() {
    state_ += 0x9e3779b97f4a7c15ULL;
    return mix64(state_);
  }
  double uniform() { return unit_double(next()); }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Uniform in [0, n), n >= 1, without modulo bias: draws past the largest multiple
  // of n are rejected.
  uint64_t below(uint64_t n) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t r = next();
    while (r >= limit) r = next();
    return r % n;
  }
  // Standard normal by Box-Muller (one of the pair; simple and exact enough for init).
  double normal() {
    double u1 = uniform();
    while (u1 <= 0.0) u1 = uniform();
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  }

 private:
  uint64_t state_;
};

}  // namespace bnorm::nn
