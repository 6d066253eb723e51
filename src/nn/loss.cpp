#include "nn/loss.h"

#include <cmath>
#include <sstream>
#include <stdexcept>

namespace bnorm::nn {

template <class T>
LossTotals softmax_cross_entropy(const Tensor<T>& logits, std::span<const int32_t> labels,
                                 Tensor<T>* dlogits, int64_t mean_over) {
  if (logits.rank() != 2 || static_cast<int64_t>(labels.size()) != logits.dim(0)) {
    std::ostringstream s;
    s << "softmax_cross_entropy: expected logits (N, K) and N labels, got logits "
      << logits.shape().str() << " and " << labels.size() << " labels";
    throw std::invalid_argument(s.str());
  }
  const int64_t n = logits.dim(0), k = logits.dim(1);
  if (mean_over < 0) throw std::invalid_argument("softmax_cross_entropy: mean_over must be >= 0");
  const double divisor = static_cast<double>(mean_over > 0 ? mean_over : n);
  LossTotals totals;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t label = labels[static_cast<size_t>(i)];
    if (label < 0 || label >= k) {
      std::ostringstream s;
      s << "softmax_cross_entropy: label " << label << " at index " << i
        << " is out of range [0, " << k << ")";
      throw std::invalid_argument(s.str());
    }
    const T* z = logits.data() + i * k;
    int64_t best = 0;
    for (int64_t j = 1; j < k; ++j)
      if (z[j] > z[best]) best = j;
    const double zmax = static_cast<double>(z[best]);
    double sum = 0;
    for (int64_t j = 0; j < k; ++j) sum += std::exp(static_cast<double>(z[j]) - zmax);
    const double log_sum = std::log(sum) + zmax;
    totals.loss_sum += log_sum - static_cast<double>(z[label]);
    totals.correct += best == label ? 1 : 0;
    if (dlogits) {
      T* g = dlogits->data() + i * k;
      for (int64_t j = 0; j < k; ++j) {
        const double p = std::exp(static_cast<double>(z[j]) - log_sum);
        g[j] = static_cast<T>((p - (j == label ? 1.0 : 0.0)) / divisor);
      }
    }
  }
  return totals;
}

template LossTotals softmax_cross_entropy<float>(const Tensor<float>&, std::span<const int32_t>,
                                                 Tensor<float>*, int64_t);
template LossTotals softmax_cross_entropy<double>(const Tensor<double>&,
                                                  std::span<const int32_t>, Tensor<double>*, int64_t);

}  // namespace bnorm::nn
