// Every bad-input class through the C API: the status, a message naming the argument,
// and nothing written to outputs, running buffers or num_batches_tracked.
#include <gtest/gtest.h>

#include <bnorm/bnorm.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace {

constexpr int64_t kN = 2, kC = 3, kS = 4;

// An enum holding a value outside its enumerators, as a careless C caller can pass.
template <class E>
E out_of_range(int value) {
  E e;
  static_assert(sizeof(E) == sizeof(int));
  std::memcpy(&e, &value, sizeof e);
  return e;
}

// Outputs pre-filled with sentinels, checked unchanged after a failing call.
struct Buffers {
  std::vector<float> x = std::vector<float>(kN * kC * kS, 1.5f);
  std::vector<float> y = std::vector<float>(kN * kC * kS, 42.f);
  std::vector<float> dx = std::vector<float>(kN * kC * kS, 43.f);
  std::vector<float> rm = std::vector<float>(kC, 5.f), rv = std::vector<float>(kC, 6.f);
  std::vector<float> sm = std::vector<float>(kC, 7.f), si = std::vector<float>(kC, 8.f);
  std::vector<float> dw = std::vector<float>(kC, 9.f), db = std::vector<float>(kC, 10.f);
  int64_t tracked = 3;

  void expect_untouched() const {
    for (float v : y) ASSERT_EQ(v, 42.f);
    for (float v : dx) ASSERT_EQ(v, 43.f);
    for (float v : rm) ASSERT_EQ(v, 5.f);
    for (float v : rv) ASSERT_EQ(v, 6.f);
    for (float v : sm) ASSERT_EQ(v, 7.f);
    for (float v : si) ASSERT_EQ(v, 8.f);
    for (float v : dw) ASSERT_EQ(v, 9.f);
    for (float v : db) ASSERT_EQ(v, 10.f);
    ASSERT_EQ(tracked, 3);
  }
  bnorm_status train(bnorm_layout layout, int64_t n, int64_t c, int64_t s, const float* xp,
                     float* yp, double eps, double momentum) {
    return bnorm_batch_norm_forward_training_f32(layout, n, c, s, xp, yp, nullptr, nullptr, eps,
                                                 momentum, rm.data(), rv.data(), sm.data(),
                                                 si.data());
  }
  bnorm_status train_ex(const bnorm_running_stats_update* u) {
    return bnorm_batch_norm_forward_training_ex_f32(BNORM_CHANNELS_FIRST, kN, kC, kS, x.data(),
                                                    y.data(), nullptr, nullptr, 1e-5, u, rm.data(),
                                                    rv.data(), sm.data(), si.data());
  }
};

void expect_failure(bnorm_status got, bnorm_status want, const std::string& message_part,
                    const Buffers& b) {
  EXPECT_EQ(got, want) << bnorm_status_string(got) << ": " << bnorm_last_error();
  EXPECT_NE(std::string(bnorm_last_error()).find(message_part), std::string::npos)
      << "message: " << bnorm_last_error() << "\nexpected to contain: " << message_part;
  b.expect_untouched();
}

TEST(CApiErrors, NullPointers) {
  Buffers b;
  expect_failure(b.train(BNORM_CHANNELS_FIRST, kN, kC, kS, nullptr, b.y.data(), 1e-5, 0.1),
                 BNORM_ERROR_NULL_POINTER, "x must not be NULL", b);
  expect_failure(b.train(BNORM_CHANNELS_FIRST, kN, kC, kS, b.x.data(), nullptr, 1e-5, 0.1),
                 BNORM_ERROR_NULL_POINTER, "y must not be NULL", b);
  expect_failure(bnorm_batch_norm_forward_inference_f32(BNORM_CHANNELS_FIRST, kN, kC, kS,
                                                        b.x.data(), b.y.data(), nullptr, nullptr,
                                                        nullptr, b.rv.data(), 1e-5),
                 BNORM_ERROR_NULL_POINTER, "running_mean must not be NULL", b);
  expect_failure(bnorm_batch_norm_backward_f32(BNORM_CHANNELS_FIRST, kN, kC, kS, b.x.data(),
                                               b.x.data(), b.dx.data(), nullptr, nullptr,
                                               b.si.data(), b.dw.data(), b.db.data()),
                 BNORM_ERROR_NULL_POINTER, "save_mean must not be NULL", b);
  expect_failure(bnorm_batch_norm_backward_f32(BNORM_CHANNELS_FIRST, kN, kC, kS, b.x.data(),
                                               nullptr, b.dx.data(), nullptr, b.sm.data(),
                                               b.si.data(), b.dw.data(), b.db.data()),
                 BNORM_ERROR_NULL_POINTER, "dy must not be NULL", b);
  expect_failure(bnorm_batch_norm_backward_inference_f32(BNORM_CHANNELS_FIRST, kN, kC, kS,
                                                         b.x.data(), b.x.data(), b.dx.data(),
                                                         nullptr, b.rm.data(), nullptr, 1e-5,
                                                         b.dw.data(), b.db.data()),
                 BNORM_ERROR_NULL_POINTER, "running_var must not be NULL", b);
}

TEST(CApiErrors, ZeroNegativeAndOverflowingSizes) {
  Buffers b;
  expect_failure(b.train(BNORM_CHANNELS_FIRST, 0, kC, kS, b.x.data(), b.y.data(), 1e-5, 0.1),
                 BNORM_ERROR_INVALID_SHAPE, "n must be >= 1", b);
  expect_failure(b.train(BNORM_CHANNELS_LAST, kN, -3, kS, b.x.data(), b.y.data(), 1e-5, 0.1),
                 BNORM_ERROR_INVALID_SHAPE, "c must be >= 1", b);
  expect_failure(b.train(BNORM_CHANNELS_FIRST, kN, kC, 0, b.x.data(), b.y.data(), 1e-5, 0.1),
                 BNORM_ERROR_INVALID_SHAPE, "spatial must be >= 1", b);
  const int64_t big = int64_t{1} << 40;
  expect_failure(b.train(BNORM_CHANNELS_FIRST, big, big, 1, b.x.data(), b.y.data(), 1e-5, 0.1),
                 BNORM_ERROR_SIZE_OVERFLOW, "overflows int64_t", b);
  expect_failure(b.train(out_of_range<bnorm_layout>(7), kN, kC, kS, b.x.data(), b.y.data(), 1e-5, 0.1),
                 BNORM_ERROR_INVALID_SHAPE, "layout must be", b);
}

TEST(CApiErrors, TrainingWithOneValuePerChannel) {
  Buffers b;
  expect_failure(b.train(BNORM_CHANNELS_FIRST, 1, kC, 1, b.x.data(), b.y.data(), 1e-5, 0.1),
                 BNORM_ERROR_TOO_FEW_VALUES,
                 "Expected more than 1 value per channel when training", b);
  // Inference with one value per channel is fine.
  std::vector<float> y(kC);
  EXPECT_EQ(bnorm_batch_norm_forward_inference_f32(BNORM_CHANNELS_FIRST, 1, kC, 1, b.x.data(),
                                                   y.data(), nullptr, nullptr, b.rm.data(),
                                                   b.rv.data(), 1e-5),
            BNORM_SUCCESS);
}

TEST(CApiErrors, BadEps) {
  Buffers b;
  for (double eps : {-1e-5, std::nan(""), std::numeric_limits<double>::infinity()})
    expect_failure(b.train(BNORM_CHANNELS_FIRST, kN, kC, kS, b.x.data(), b.y.data(), eps, 0.1),
                   BNORM_ERROR_INVALID_VALUE, "eps must be finite and >= 0", b);
  expect_failure(bnorm_batch_norm_forward_inference_f32(BNORM_CHANNELS_FIRST, kN, kC, kS,
                                                        b.x.data(), b.y.data(), nullptr, nullptr,
                                                        b.rm.data(), b.rv.data(), -1.0),
                 BNORM_ERROR_INVALID_VALUE, "eps", b);
}

TEST(CApiErrors, BadMomentumAndUpdateOptions) {
  Buffers b;
  for (double m : {-0.5, 1.5, std::nan("")})
    expect_failure(b.train(BNORM_CHANNELS_FIRST, kN, kC, kS, b.x.data(), b.y.data(), 1e-5, m),
                   BNORM_ERROR_INVALID_VALUE, "momentum must be in [0, 1]", b);
  expect_failure(b.train(BNORM_CHANNELS_FIRST, kN, kC, kS, b.x.data(), b.y.data(), 1e-5,
                         BNORM_MOMENTUM_CUMULATIVE),
                 BNORM_ERROR_INVALID_VALUE, "_ex_f32", b);
  bnorm_running_stats_update u{BNORM_MOMENTUM_CUMULATIVE, BNORM_RUNNING_VAR_UNBIASED, nullptr};
  expect_failure(b.train_ex(&u), BNORM_ERROR_NULL_POINTER, "num_batches_tracked must not be NULL", b);
  int64_t negative = -1;
  u.num_batches_tracked = &negative;
  expect_failure(b.train_ex(&u), BNORM_ERROR_INVALID_VALUE, "num_batches_tracked must be >= 0", b);
  u = {0.1, out_of_range<bnorm_running_var_estimator>(5), &b.tracked};
  expect_failure(b.train_ex(&u), BNORM_ERROR_INVALID_VALUE, "running_var_estimator", b);
}

TEST(CApiErrors, NumBatchesTrackedAtInt64MaxWouldOverflow) {
  Buffers b;
  b.tracked = std::numeric_limits<int64_t>::max();
  const bnorm_running_stats_update u{0.1, BNORM_RUNNING_VAR_UNBIASED, &b.tracked};
  EXPECT_EQ(b.train_ex(&u), BNORM_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(bnorm_last_error()).find("overflow"), std::string::npos);
  EXPECT_EQ(b.tracked, std::numeric_limits<int64_t>::max());
  for (float v : b.rm) EXPECT_EQ(v, 5.f);
}

TEST(CApiErrors, ChannelCountsTooLargeToAllocateAreOutOfMemoryNotACrash) {
  // n * c * spatial fits int64_t, but per-channel scratch for c channels cannot exist.
  Buffers b;
  for (int64_t c : {int64_t{0x5555555555555556}, int64_t{1} << 61}) {
    expect_failure(bnorm_batch_norm_forward_inference_f32(BNORM_CHANNELS_FIRST, 1, c, 1,
                                                          b.x.data(), b.y.data(), nullptr,
                                                          nullptr, b.rm.data(), b.rv.data(), 1e-5),
                   BNORM_ERROR_OUT_OF_MEMORY, "out of memory", b);
  }
  expect_failure(b.train(BNORM_CHANNELS_LAST, 2, int64_t{1} << 61, 1, b.x.data(), b.y.data(),
                         1e-5, 0.1),
                 BNORM_ERROR_OUT_OF_MEMORY, "out of memory", b);
}

TEST(CApiErrors, MessagesAreKeptPerThreadAndStatusesHaveNames) {
  EXPECT_STREQ(bnorm_status_string(BNORM_ERROR_TOO_FEW_VALUES), "BNORM_ERROR_TOO_FEW_VALUES");
  EXPECT_STREQ(bnorm_status_string(BNORM_SUCCESS), "BNORM_SUCCESS");
  EXPECT_EQ(bnorm_version() / 10000, 0);
  EXPECT_STRNE(bnorm_version_string(), "");
}

}  // namespace
