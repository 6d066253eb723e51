// Checks the C++ API makes that the flat C API cannot: that y, dy, dx match x, and the
// lengths of per-channel (or per-column, per-row) spans. Shared by every C++ entry point.
#pragma once

#include <bnorm/bnorm.hpp>

#include <sstream>
#include <string>
#include <vector>

namespace bnorm::api {

inline std::string describe(const std::vector<int64_t>& sizes, Layout layout) {
  std::ostringstream out;
  out << '[';
  for (size_t d = 0; d < sizes.size(); ++d) out << (d ? ", " : "") << sizes[d];
  out << "] " << (layout == Layout::channels_last ? "channels_last" : "channels_first");
  return out.str();
}

template <class A, class B>
void check_same_shape(const char* op, const char* name, const TensorView<A>& t,
                      const TensorView<B>& x) {
  if (t.sizes != x.sizes || t.layout != x.layout)
    throw Error(BNORM_ERROR_SHAPE_MISMATCH, std::string(op) + ": " + name + " is " +
                                                describe(t.sizes, t.layout) + ", expected x's " +
                                                describe(x.sizes, x.layout));
}

// nullptr for an empty span ("not given"), else the data after checking its length:
// `count` values, one per `what` ("channel", "column", "row", ...).
template <class T>
T* span_of(const char* op, const char* name, std::span<T> values, int64_t count,
           const char* what) {
  if (values.empty()) return nullptr;
  if (static_cast<int64_t>(values.size()) != count)
    throw Error(BNORM_ERROR_SHAPE_MISMATCH, std::string(op) + ": " + name + " has " +
                                                std::to_string(values.size()) +
                                                " values, expected " + std::to_string(count) +
                                                " (one per " + what + ")");
  return values.data();
}

// The same, one value per channel.
template <class T>
T* per_channel(const char* op, const char* name, std::span<T> values, int64_t channels) {
  return span_of(op, name, values, channels, "channel");
}

// The C API's update for the C++ one's (nullopt momentum: the cumulative average).
inline bnorm_running_stats_update c_update(const char* op, const RunningStatsUpdate& update) {
  if (!update.momentum && !update.num_batches_tracked)
    throw Error(BNORM_ERROR_NULL_POINTER,
                std::string(op) + ": momentum std::nullopt (the cumulative average) needs "
                                  "update.num_batches_tracked, the count of batches seen");
  if (update.momentum && *update.momentum == BNORM_MOMENTUM_CUMULATIVE)
    throw Error(BNORM_ERROR_INVALID_VALUE,
                std::string(op) + ": momentum must be in [0, 1], got " +
                    std::to_string(*update.momentum) +
                    " (for the cumulative average pass std::nullopt)");
  return bnorm_running_stats_update{update.momentum.value_or(BNORM_MOMENTUM_CUMULATIVE),
                                    static_cast<bnorm_running_var_estimator>(update.running_var),
                                    update.num_batches_tracked};
}

}  // namespace bnorm::api
