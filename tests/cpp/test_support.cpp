#include "test_support.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace bnorm::test {

std::string Shape::name() const {
  std::ostringstream out;
  out << 'n' << n << "_c" << c << "_s" << spatial << (channels_last ? "_last" : "_first");
  return out.str();
}

template <class T>
std::vector<T> random_values(int64_t count, uint32_t seed, double offset, double scale) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  std::vector<T> v(static_cast<size_t>(count));
  for (auto& value : v) value = static_cast<T>(offset + scale * normal(rng));
  return v;
}
template std::vector<float> random_values<float>(int64_t, uint32_t, double, double);
template std::vector<double> random_values<double>(int64_t, uint32_t, double, double);

double max_relative_error(const std::vector<double>& a, const std::vector<double>& b) {
  double diff = 0, scale = 1;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return diff / scale;
}

double norm_relative_error(const std::vector<double>& a, const std::vector<double>& b) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff += (a[i] - b[i]) * (a[i] - b[i]);
    norm += b[i] * b[i];
  }
  return std::sqrt(diff / norm);
}

std::vector<Shape> odd_shapes() {
  std::vector<Shape> shapes;
  for (int64_t n : kOddSizes)
    for (int64_t c : kOddSizes)
      for (int64_t s : kOddSizes)
        for (bool last : {false, true}) shapes.push_back({n, c, s, last});
  return shapes;
}

}  // namespace bnorm::test
