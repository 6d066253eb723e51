#include "dist/data_parallel.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace bnorm::dist {
namespace {

// A 64-bit value as two doubles that hold it exactly (32 bits each).
void split(uint64_t v, double* out) {
  out[0] = static_cast<double>(v >> 32);
  out[1] = static_cast<double>(v & 0xffffffffu);
}

uint64_t fnv1a(const void* data, size_t bytes, uint64_t h = 1469598103934665603ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

void check_rc(const char* what, int rc) {
  if (rc != 0)
    throw std::runtime_error(std::string("data-parallel training: collective ") + what +
                             " returned " + std::to_string(rc));
}

std::vector<double> gather_fingerprints(const bnorm_collective& c, const std::vector<uint64_t>& mine) {
  std::vector<double> send(2 * mine.size()), all(send.size() * static_cast<size_t>(c.size));
  for (size_t i = 0; i < mine.size(); ++i) split(mine[i], &send[2 * i]);
  check_rc("allgather_f64", c.allgather_f64(c.context, send.data(), all.data(),
                                            static_cast<int64_t>(send.size())));
  return all;
}

}  // namespace

Slice batch_slice(int64_t batch, int rank, int size) {
  const int64_t share = batch / size, extra = batch % size;
  return Slice{rank * share + std::min<int64_t>(rank, extra), share + (rank < extra ? 1 : 0)};
}

int64_t smallest_batch(int64_t examples, int64_t batch) {
  const int64_t last = examples % batch;
  return std::min(examples, last == 0 ? batch : last);
}

void check_batches_split(int64_t examples, int64_t batch, int processes) {
  const int64_t smallest = smallest_batch(examples, batch);
  if (smallest < processes)
    throw std::invalid_argument(
        "a batch of " + std::to_string(smallest) + " example(s) cannot give each of the " +
        std::to_string(processes) + " processes an example (it is " +
        (smallest == examples ? "the whole set" : "the last batch of the epoch") +
        "; change --batch-size or --train-examples, or use fewer processes)");
}

GradientAllreduce::GradientAllreduce(const bnorm_collective& collective,
                                     std::vector<std::span<float>> gradients,
                                     std::vector<std::span<float>> rank0_values, int extras)
    : collective_(&collective), gradients_(std::move(gradients)),
      rank0_values_(std::move(rank0_values)) {
  size_t total = static_cast<size_t>(extras);
  for (const auto& g : gradients_) total += g.size();
  for (const auto& v : rank0_values_) total += v.size();
  flat_.resize(total);
}

int64_t GradientAllreduce::buckets() const {
  return (values() + kBucketValues - 1) / kBucketValues;
}

void GradientAllreduce::run(std::span<double> extras) {
  // Layout: gradients, rank 0's values (zeros elsewhere: the sum is rank 0's), extras.
  double* at = flat_.data();
  for (const auto& g : gradients_) at = std::copy(g.begin(), g.end(), at);
  const bool root = collective_->rank == 0;
  for (const auto& v : rank0_values_)
    at = root ? std::copy(v.begin(), v.end(), at) : std::fill_n(at, v.size(), 0.0);
  if (at + extras.size() != flat_.data() + flat_.size())
    throw std::logic_error("GradientAllreduce::run: extras of the wrong length");
  std::copy(extras.begin(), extras.end(), at);
  for (int64_t b = 0; b < values(); b += kBucketValues)
    check_rc("allreduce_sum_f64",
             collective_->allreduce_sum_f64(collective_->context, flat_.data() + b,
                                            std::min(kBucketValues, values() - b)));
  const double* from = flat_.data();
  for (const auto& g : gradients_)
    for (float& v : g) v = static_cast<float>(*from++);
  for (const auto& r : rank0_values_)
    for (float& v : r) v = static_cast<float>(*from++);
  std::copy(from, from + extras.size(), extras.begin());
}

uint64_t state_fingerprint(const std::vector<std::span<const float>>& arrays) {
  uint64_t h = 1469598103934665603ull;
  for (const auto& a : arrays) h = fnv1a(a.data(), a.size_bytes(), h);
  return h;
}

void check_same_everywhere(const bnorm_collective& c, uint64_t fingerprint, const std::string& when) {
  const std::vector<double> all = gather_fingerprints(c, {fingerprint});
  std::string differ;
  for (int r = 1; r < c.size; ++r)
    if (all[2 * static_cast<size_t>(r)] != all[0] || all[2 * static_cast<size_t>(r) + 1] != all[1])
      differ += (differ.empty() ? "" : ", ") + std::to_string(r);
  if (!differ.empty())
    throw std::runtime_error("data-parallel training: the parameters of process(es) " + differ +
                             " differ from rank 0's " + when +
                             " (every process must hold the same model); stopping");
}

void check_same_settings(const bnorm_collective& c,
                         const std::vector<std::pair<std::string, std::string>>& settings) {
  // First the count (a different build could list other settings), then each value.
  std::vector<uint64_t> mine{settings.size()};
  for (const auto& [name, value] : settings)
    mine.push_back(fnv1a(value.data(), value.size(), fnv1a(name.data(), name.size())));
  std::vector<double> counts(2 * static_cast<size_t>(c.size));
  double my_count[2];
  split(settings.size(), my_count);
  check_rc("allgather_f64", c.allgather_f64(c.context, my_count, counts.data(), 2));
  for (int r = 1; r < c.size; ++r)
    if (counts[2 * static_cast<size_t>(r) + 1] != counts[1])
      throw std::runtime_error("the processes were started from different bnorm builds (rank " +
                               std::to_string(r) + " lists other settings than rank 0)");
  const std::vector<double> all = gather_fingerprints(c, mine);
  const size_t stride = 2 * mine.size();
  for (size_t i = 0; i < settings.size(); ++i) {
    std::string differ;
    bool mine_differs = false;
    for (int r = 1; r < c.size; ++r) {
      const double* theirs = &all[static_cast<size_t>(r) * stride + 2 * (i + 1)];
      if (theirs[0] != all[2 * (i + 1)] || theirs[1] != all[2 * (i + 1) + 1]) {
        differ += (differ.empty() ? "" : ", ") + std::to_string(r);
        if (r == c.rank) mine_differs = true;
      }
    }
    if (!differ.empty())
      throw std::runtime_error(
          "the processes were started with different " + settings[i].first + " (rank(s) " +
          differ + " differ from rank 0" +
          (mine_differs ? "; this process, rank " + std::to_string(c.rank) + ", has '" +
                              settings[i].second + "'"
                        : c.rank == 0 ? "; rank 0 has '" + settings[i].second + "'" : "") +
          "): every process of a data-parallel run must get the same options and model");
  }
}

}  // namespace bnorm::dist
