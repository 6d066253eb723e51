// Batch norm folded out of an engine model, for inference.
//
// In eval mode a BatchNorm layer is the per-channel affine map
//   y = (z - running_mean) * s + beta,   s = gamma / sqrt(running_var + eps)
// and when z comes straight from a Conv2d or Linear layer (output channel c = row c of
// its weight) the two are one layer: W'[c,:] = W[c,:] * s[c], b'[c] = (b[c] - mean[c]) *
// s[c] + beta[c] (bnorm::fold_batch_norm, in double), and the BatchNorm layer goes.
// A BatchNorm after anything else (a pooling layer, an activation, another norm) cannot
// fold: it becomes a ChannelAffine layer (y = x * s + (beta - mean * s)), the same map
// without the statistics, and the report says so.
#pragma once

#include <string>
#include <vector>

#include "nn/sequential.h"

namespace bnorm::deploy {

struct FoldReport {
  // "1.BatchNorm2d(6) into 0.Conv2d(1, 6, kernel_size=5)": indices of the model before folding.
  std::vector<std::string> folded;
  // "3.BatchNorm1d(6) after 2.AvgPool2d(...): kept as 2.ChannelAffine(6)": what could not fold.
  std::vector<std::string> kept_as_affine;
  // Several lines for a person: what folded, what did not, or that there was no batch norm.
  std::string summary() const;
};

// Rewrites `model` in place. Refuses (std::invalid_argument, nothing changed) a model in
// training mode (batch norm then normalizes with the batch's statistics, which no weight
// can hold), and a BatchNorm without running statistics (the same in eval mode). The
// model stays in eval mode; its state names follow the new layer indices.
template <class T>
FoldReport fold_batch_norms(nn::Sequential<T>& model);

extern template FoldReport fold_batch_norms<float>(nn::Sequential<float>&);
extern template FoldReport fold_batch_norms<double>(nn::Sequential<double>&);

}  // namespace bnorm::deploy
