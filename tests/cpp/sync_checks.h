// SyncBN's properties, checked from one process's side with any bnorm_collective: the
// thread group of thread_collective.h (ctest) or MPI (tests/mpi/, under mpirun). Every
// process runs the same checks in the same order.
//
// The oracle is one-process batch norm on the concatenated batch: every process builds
// the whole batch from the same seed, runs bnorm_batch_norm_* on it, and compares its
// own slice of the SyncBN results (float32 within 1e-6, float64 within 1e-12, relative
// to max(1, max |reference|)).
#pragma once

#include <bnorm/bnorm.h>
#include <bnorm/sync_batch_norm.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "test_support.h"

namespace bnorm::test {

template <class T>
struct SyncCApi;
template <>
struct SyncCApi<float> {
  static constexpr auto forward = bnorm_sync_batch_norm_forward_training_f32;
  static constexpr auto backward = bnorm_sync_batch_norm_backward_f32;
};
template <>
struct SyncCApi<double> {
  static constexpr auto forward = bnorm_sync_batch_norm_forward_training_f64;
  static constexpr auto backward = bnorm_sync_batch_norm_backward_f64;
};

// Wraps a collective and counts its calls (the contract: one per forward, one per
// backward).
struct CountingCollective {
  const bnorm_collective* inner;
  int allgathers = 0, allreduces = 0;
  bnorm_collective view() {
    return bnorm_collective{this, inner->rank, inner->size, &allgather, &allreduce_sum};
  }
  static int allgather(void* self, const double* send, double* recv, int64_t count) {
    auto* c = static_cast<CountingCollective*>(self);
    ++c->allgathers;
    return c->inner->allgather_f64(c->inner->context, send, recv, count);
  }
  static int allreduce_sum(void* self, double* values, int64_t count) {
    auto* c = static_cast<CountingCollective*>(self);
    ++c->allreduces;
    return c->inner->allreduce_sum_f64(c->inner->context, values, count);
  }
};

// Every process holds the same bits in `values` (checked with one allgather).
inline void expect_same_bits_everywhere(const bnorm_collective& comm, const std::vector<double>& values,
                                        const char* what) {
  std::vector<double> all(values.size() * static_cast<size_t>(comm.size));
  ASSERT_EQ(comm.allgather_f64(comm.context, values.data(), all.data(),
                               static_cast<int64_t>(values.size())), 0);
  for (int r = 0; r < comm.size; ++r)
    EXPECT_EQ(std::memcmp(all.data() + static_cast<size_t>(r) * values.size(), values.data(),
                          values.size() * sizeof(double)), 0)
        << what << ": rank " << comm.rank << " and rank " << r << " differ";
}

struct SyncCase {
  std::vector<int64_t> slices;  // samples per process; comm.size entries
  int64_t c, spatial;
  bool channels_last;
  std::string name() const {
    std::ostringstream s;
    s << "slices [";
    for (size_t i = 0; i < slices.size(); ++i) s << (i ? "," : "") << slices[i];
    s << "] c " << c << " spatial " << spatial
      << (channels_last ? " channels_last" : " channels_first");
    return s.str();
  }
};

template <class T>
void expect_sync_matches_one_process(const bnorm_collective& comm, const SyncCase& sc) {
  SCOPED_TRACE(sc.name() + (sizeof(T) == 4 ? " float32" : " float64") + " rank " +
               std::to_string(comm.rank));
  ASSERT_EQ(static_cast<int>(sc.slices.size()), comm.size);
  const double tol = sizeof(T) == 4 ? 1e-6 : 1e-12;
  const int64_t n = std::accumulate(sc.slices.begin(), sc.slices.end(), int64_t{0});
  const int64_t c = sc.c, per_sample = sc.c * sc.spatial;
  const bnorm_layout layout = sc.channels_last ? BNORM_CHANNELS_LAST : BNORM_CHANNELS_FIRST;
  // A mean far from 0 (Chan's merge keeps its digits) and a channel-dependent spread.
  const auto x = random_values<T>(n * per_sample, 11, 7.0, 2.0);
  const auto dy = random_values<T>(n * per_sample, 12, 0.5, 1.0);
  const auto weight = random_values<T>(c, 13, 1.0, 0.3);
  const auto bias = random_values<T>(c, 14, 0.0, 0.5);
  const auto running0 = random_values<T>(2 * c, 15, 1.0, 0.1);

  // The oracle: one process, the whole batch.
  std::vector<T> y(x.size()), dx(x.size()), save_mean(c), save_invstd(c), dweight(c), dbias(c);
  std::vector<T> running_mean(running0.begin(), running0.begin() + c);
  std::vector<T> running_var(running0.begin() + c, running0.end());
  int64_t batches = 3;
  bnorm_running_stats_update update{0.1, BNORM_RUNNING_VAR_UNBIASED, &batches};
  ASSERT_EQ(CApi<T>::forward_training_ex(layout, n, c, sc.spatial, x.data(), y.data(),
                                         weight.data(), bias.data(), 1e-5, &update,
                                         running_mean.data(), running_var.data(),
                                         save_mean.data(), save_invstd.data()),
            BNORM_SUCCESS) << bnorm_last_error();
  ASSERT_EQ(CApi<T>::backward(layout, n, c, sc.spatial, x.data(), dy.data(), dx.data(),
                              weight.data(), save_mean.data(), save_invstd.data(),
                              dweight.data(), dbias.data()),
            BNORM_SUCCESS) << bnorm_last_error();

  // This process: its slice, through a collective that counts its calls.
  const int64_t begin = std::accumulate(sc.slices.begin(), sc.slices.begin() + comm.rank, int64_t{0});
  const int64_t mine = sc.slices[static_cast<size_t>(comm.rank)];
  const T* x_mine = mine ? x.data() + begin * per_sample : nullptr;  // an empty slice: NULL
  const T* dy_mine = mine ? dy.data() + begin * per_sample : nullptr;
  std::vector<T> y_mine(static_cast<size_t>(mine * per_sample)), dx_mine(y_mine.size());
  std::vector<T> s_mean(c), s_invstd(c), s_dweight(c), s_dbias(c);
  std::vector<T> s_running_mean(running0.begin(), running0.begin() + c);
  std::vector<T> s_running_var(running0.begin() + c, running0.end());
  int64_t s_batches = 3;
  bnorm_running_stats_update s_update{0.1, BNORM_RUNNING_VAR_UNBIASED, &s_batches};
  CountingCollective counting{&comm};
  const bnorm_collective counted = counting.view();
  ASSERT_EQ(SyncCApi<T>::forward(&counted, layout, mine, c, sc.spatial, x_mine,
                                 mine ? y_mine.data() : nullptr, weight.data(), bias.data(), 1e-5,
                                 &s_update, s_running_mean.data(), s_running_var.data(),
                                 s_mean.data(), s_invstd.data()),
            BNORM_SUCCESS) << bnorm_last_error();
  EXPECT_EQ(counting.allgathers, 1);
  EXPECT_EQ(counting.allreduces, 0);
  ASSERT_EQ(SyncCApi<T>::backward(&counted, layout, mine, c, sc.spatial, x_mine, dy_mine,
                                  mine ? dx_mine.data() : nullptr, weight.data(), s_mean.data(),
                                  s_invstd.data(), s_dweight.data(), s_dbias.data()),
            BNORM_SUCCESS) << bnorm_last_error();
  EXPECT_EQ(counting.allgathers, 1);
  EXPECT_EQ(counting.allreduces, 1);

  const auto slice = [&](const std::vector<T>& whole) {
    return std::vector<double>(whole.begin() + begin * per_sample,
                               whole.begin() + (begin + mine) * per_sample);
  };
  EXPECT_LE(max_relative_error(y_mine, slice(y)), tol) << "y";
  EXPECT_LE(max_relative_error(dx_mine, slice(dx)), tol) << "dx";
  EXPECT_LE(max_relative_error(s_mean, to_double(save_mean)), tol) << "save_mean";
  EXPECT_LE(max_relative_error(s_invstd, to_double(save_invstd)), tol) << "save_invstd";
  EXPECT_LE(max_relative_error(s_running_mean, to_double(running_mean)), tol) << "running_mean";
  EXPECT_LE(max_relative_error(s_running_var, to_double(running_var)), tol) << "running_var";
  EXPECT_LE(max_relative_error(s_dweight, to_double(dweight)), tol) << "dweight";
  EXPECT_LE(max_relative_error(s_dbias, to_double(dbias)), tol) << "dbias";
  EXPECT_EQ(s_batches, 4);

  // Every process holds the same statistics and gradients, to the bit.
  std::vector<double> shared;
  for (const auto* v : {&s_mean, &s_invstd, &s_running_mean, &s_running_var, &s_dweight, &s_dbias})
    shared.insert(shared.end(), v->begin(), v->end());
  expect_same_bits_everywhere(comm, shared, "statistics and parameter gradients");
}

// The last process refuses its arguments (x NULL with n > 0): it gets its own error,
// every other process BNORM_ERROR_COLLECTIVE naming it, and nobody writes anything.
template <class T>
void expect_refusal_reaches_everyone(const bnorm_collective& comm) {
  const int64_t n = 3, c = 4, spatial = 5;
  const bool refuses = comm.rank == comm.size - 1;
  const auto x = random_values<T>(n * c * spatial, 21);
  std::vector<T> y(x.size(), T(-7)), mean(c, T(-7)), invstd(c, T(-7)), running(c, T(-7));
  const bnorm_status s = SyncCApi<T>::forward(&comm, BNORM_CHANNELS_FIRST, n, c, spatial,
                                              refuses ? nullptr : x.data(), y.data(), nullptr,
                                              nullptr, 1e-5, nullptr, running.data(), nullptr,
                                              mean.data(), invstd.data());
  const std::string message = bnorm_last_error();
  if (refuses) {
    EXPECT_EQ(s, BNORM_ERROR_NULL_POINTER) << message;
    EXPECT_NE(message.find("x must not be NULL"), std::string::npos) << message;
  } else {
    EXPECT_EQ(s, BNORM_ERROR_COLLECTIVE) << message;
    EXPECT_NE(message.find("process " + std::to_string(comm.size - 1) + " refused"),
              std::string::npos) << message;
  }
  for (const auto* v : {&y, &mean, &invstd, &running})
    for (T value : *v) ASSERT_EQ(value, T(-7)) << "written despite the refusal";

  // The same for the backward: one process asks with mismatched save_mean (NULL).
  std::vector<T> dx(x.size(), T(-7)), dweight(c, T(-7));
  const std::vector<T> sm(c, T(0)), si(c, T(1));
  const bnorm_status b = SyncCApi<T>::backward(&comm, BNORM_CHANNELS_FIRST, n, c, spatial,
                                               x.data(), x.data(), dx.data(), nullptr,
                                               refuses ? nullptr : sm.data(), si.data(),
                                               dweight.data(), nullptr);
  EXPECT_EQ(b, refuses ? BNORM_ERROR_NULL_POINTER : BNORM_ERROR_COLLECTIVE) << bnorm_last_error();
  for (const auto* v : {&dx, &dweight})
    for (T value : *v) ASSERT_EQ(value, T(-7)) << "written despite the refusal";
}

// The cases every collective is tried on: even, uneven and empty slices, both layouts,
// spatial 1 (BatchNorm1d) and more.
inline std::vector<SyncCase> sync_cases(int size) {
  std::vector<std::vector<int64_t>> splits;
  std::vector<int64_t> even(static_cast<size_t>(size), 4);
  splits.push_back(even);
  std::vector<int64_t> uneven;
  for (int r = 0; r < size; ++r) uneven.push_back(2 + (r * 5) % 7);
  splits.push_back(uneven);
  if (size > 1) {
    std::vector<int64_t> empty(static_cast<size_t>(size), 0);
    empty[0] = 3;
    empty[static_cast<size_t>(size - 1)] = 2;  // the middle processes hold nothing
    splits.push_back(empty);
    std::vector<int64_t> first_empty(static_cast<size_t>(size), 2);
    first_empty[0] = 0;
    splits.push_back(first_empty);
  }
  std::vector<SyncCase> cases;
  for (const auto& s : splits)
    for (bool last : {false, true}) {
      cases.push_back({s, 5, 7, last});
      cases.push_back({s, 17, 1, last});
    }
  return cases;
}

}  // namespace bnorm::test
