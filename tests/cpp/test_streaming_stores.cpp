// Streaming (non-temporal) stores: forced on, every elementwise pass must write the same
// bits as with ordinary stores — both layouts, in place, fused ReLU mask, outputs that
// start off a cache line, and float and double.
#include <gtest/gtest.h>

#include <bnorm/bnorm.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <limits>
#include <vector>

#include "kernels/streaming_store.h"
#include "test_support.h"

namespace bnorm::test {
namespace {

// Forces the policy for one scope, then restores the environment's.
struct StreamingPolicy {
  explicit StreamingPolicy(bool stream) {
    kernels::override_streaming_policy(stream ? 0 : std::numeric_limits<int64_t>::max());
  }
  ~StreamingPolicy() { kernels::override_streaming_policy(-1); }
};

template <class T>
struct Outputs {
  std::vector<T> y, y_inplace, dx, dx_inplace, y_inference, dx_fixed;
  std::vector<uint8_t> mask;
  bool operator==(const Outputs&) const = default;
};

// The fused training forward's typed entry points behind one name.
bnorm_status relu_forward_training(bnorm_layout l, int64_t n, int64_t c, int64_t s, const float* x,
                                   float* y, const float* w, const float* b, double eps,
                                   const bnorm_running_stats_update* u, float* rm, float* rv,
                                   float* sm, float* si, uint8_t* mask) {
  return bnorm_batch_norm_relu_forward_training_f32(l, n, c, s, x, y, w, b, eps, u, rm, rv, sm, si, mask);
}
bnorm_status relu_forward_training(bnorm_layout l, int64_t n, int64_t c, int64_t s, const double* x,
                                   double* y, const double* w, const double* b, double eps,
                                   const bnorm_running_stats_update* u, double* rm, double* rv,
                                   double* sm, double* si, uint8_t* mask) {
  return bnorm_batch_norm_relu_forward_training_f64(l, n, c, s, x, y, w, b, eps, u, rm, rv, sm, si, mask);
}

// All passes once, outputs written `offset` values past an allocation's start.
template <class T>
Outputs<T> run_all(const Shape& s, int64_t offset) {
  const int64_t count = s.size();
  const std::vector<T> x = random_values<T>(count, 7, 3.0);
  const std::vector<T> dy = random_values<T>(count, 8);
  std::vector<T> weight = random_values<T>(s.c, 9), bias = random_values<T>(s.c, 10);
  std::vector<T> mean(s.c), invstd(s.c), rm(s.c, T(0.5)), rv(s.c, T(2));
  std::vector<T> buffer(static_cast<size_t>(count + offset));
  T* out = buffer.data() + offset;
  Outputs<T> o;
  const bnorm_layout L = s.layout();
  o.mask.assign(static_cast<size_t>(bnorm_relu_mask_bytes(s.n, s.c, s.spatial)), 0xff);
  EXPECT_EQ(relu_forward_training(L, s.n, s.c, s.spatial, x.data(), out, weight.data(),
                                  bias.data(), 1e-5, nullptr, nullptr, nullptr, mean.data(),
                                  invstd.data(), o.mask.data()),
            BNORM_SUCCESS);
  o.y.assign(out, out + count);

  std::copy(x.begin(), x.end(), out);
  EXPECT_EQ(CApi<T>::forward_training(L, s.n, s.c, s.spatial, out, out, weight.data(), bias.data(),
                                      1e-5, 0.1, nullptr, nullptr, nullptr, nullptr),
            BNORM_SUCCESS);
  o.y_inplace.assign(out, out + count);

  EXPECT_EQ(CApi<T>::backward(L, s.n, s.c, s.spatial, x.data(), dy.data(), out, weight.data(),
                              mean.data(), invstd.data(), nullptr, nullptr),
            BNORM_SUCCESS);
  o.dx.assign(out, out + count);

  std::copy(dy.begin(), dy.end(), out);
  EXPECT_EQ(CApi<T>::backward(L, s.n, s.c, s.spatial, x.data(), out, out, weight.data(),
                              mean.data(), invstd.data(), nullptr, nullptr),
            BNORM_SUCCESS);
  o.dx_inplace.assign(out, out + count);

  EXPECT_EQ(CApi<T>::forward_inference(L, s.n, s.c, s.spatial, x.data(), out, weight.data(),
                                       bias.data(), rm.data(), rv.data(), 1e-5),
            BNORM_SUCCESS);
  o.y_inference.assign(out, out + count);

  EXPECT_EQ(CApi<T>::backward_inference(L, s.n, s.c, s.spatial, x.data(), dy.data(), out,
                                        weight.data(), rm.data(), rv.data(), 1e-5, nullptr,
                                        nullptr),
            BNORM_SUCCESS);
  o.dx_fixed.assign(out, out + count);
  return o;
}

template <class T>
void expect_streaming_changes_nothing() {
  const Shape shapes[] = {{3, 5, 67 * 101, false}, {2, 17, 3073, false}, {7, 2001, 5, true},
                          {5, 3, 1001, true}, {4, 40, 1, false}};
  for (const Shape& s : shapes)
    for (const int64_t offset : {0, 3}) {
      SCOPED_TRACE(s.name() + " offset " + std::to_string(offset));
      Outputs<T> ordinary, streamed;
      {
        StreamingPolicy never(false);
        ordinary = run_all<T>(s, offset);
      }
      {
        StreamingPolicy always(true);
        streamed = run_all<T>(s, offset);
      }
      EXPECT_TRUE(ordinary == streamed);
    }
}

TEST(StreamingStores, SameBitsAsOrdinaryStoresFloat) { expect_streaming_changes_nothing<float>(); }
TEST(StreamingStores, SameBitsAsOrdinaryStoresDouble) { expect_streaming_changes_nothing<double>(); }

TEST(StreamingStores, CopyHandlesEveryAlignmentAndLength) {
  std::vector<float> src(300), dst(310);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<float>(i) + 0.5f;
  for (int64_t offset = 0; offset < 17; ++offset)
    for (const int64_t len : {0, 1, 15, 16, 17, 31, 64, 255, 290}) {
      std::fill(dst.begin(), dst.end(), -1.0f);
      kernels::stream_store(src.data(), dst.data() + offset, len);
      for (int64_t i = 0; i < static_cast<int64_t>(dst.size()); ++i) {
        const bool inside = i >= offset && i < offset + len;
        ASSERT_EQ(dst[i], inside ? src[i - offset] : -1.0f) << "offset " << offset << " len " << len;
      }
    }
}

TEST(StreamingStores, PolicyThresholdIsTheOutputSize) {
  kernels::override_streaming_policy(1000);
  EXPECT_FALSE(kernels::use_streaming_stores(1000));
  EXPECT_TRUE(kernels::use_streaming_stores(1001));
  kernels::override_streaming_policy(-1);
  EXPECT_GT(kernels::streaming_store_threshold(), 0);
}

}  // namespace
}  // namespace bnorm::test
