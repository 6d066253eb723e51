// Every kernel path (plain and fused; forward training, forward inference, backward,
// backward with fixed statistics; in place too) on pointers 1, 2 and 3 values past a
// 64-byte boundary, x, y, dy and dx each at its own offset: the results are bitwise those
// of 64-byte-aligned copies (the kernels must not depend on alignment), with ordinary and
// with streaming stores, and close to the scalar reference.
#include <gtest/gtest.h>

#include <bnorm/bnorm.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "kernels/policy.h"
#include "test_support.h"

namespace bnorm {
namespace {

using test::CApi;
using test::Shape;

template <class T>
using Tolerance = test::ReluTolerance<T>;

// `count` values starting `offset` values past a 64-byte boundary.
template <class T>
class OffsetBuffer {
 public:
  OffsetBuffer(size_t count, size_t offset) : count_(count), offset_(offset) {
    const size_t bytes = ((count + offset) * sizeof(T) + 63) / 64 * 64;
    storage_.reset(static_cast<T*>(std::aligned_alloc(64, bytes)));
    if (!storage_) throw std::bad_alloc();
  }
  OffsetBuffer(const std::vector<T>& values, size_t offset) : OffsetBuffer(values.size(), offset) {
    std::memcpy(data(), values.data(), values.size() * sizeof(T));
  }
  T* data() { return storage_.get() + offset_; }
  const T* data() const { return storage_.get() + offset_; }
  std::vector<uint8_t> bytes() const {
    const auto* b = reinterpret_cast<const uint8_t*>(data());
    return std::vector<uint8_t>(b, b + count_ * sizeof(T));
  }
  std::vector<double> as_double() const { return std::vector<double>(data(), data() + count_); }

 private:
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  size_t count_, offset_;
  std::unique_ptr<T, Free> storage_;
};

// Offsets, in values, from a 64-byte boundary.
struct Offsets {
  size_t x, y, dy, dx, mask, per_channel;
  std::string name() const {
    return "x+" + std::to_string(x) + " y+" + std::to_string(y) + " dy+" + std::to_string(dy) +
           " dx+" + std::to_string(dx) + " mask+" + std::to_string(mask) + " per-channel+" +
           std::to_string(per_channel);
  }
};
constexpr Offsets kAligned{0, 0, 0, 0, 0, 0};
constexpr Offsets kMisaligned[] = {{1, 2, 3, 2, 1, 1}, {2, 3, 1, 3, 2, 3}, {3, 1, 2, 1, 3, 2}};

template <class T>
using Problem = test::ReluProblem<T>;

// Every output of every path, by name, as bytes; the doubles for the reference checks.
struct Outputs {
  std::vector<std::pair<std::string, std::vector<uint8_t>>> bytes;
  std::vector<double> y, relu_y, iy, relu_iy, dx, relu_dx, idx, relu_idx;
  std::vector<double> dweight, dbias, relu_dweight, relu_dbias;
  std::vector<double> idweight, idbias, relu_idweight, relu_idbias;
  std::vector<double> relu_dy, relu_idy;  // dy gated by the training / inference forward
};

template <class T>
Outputs run_all(const Problem<T>& p, const Offsets& o) {
  const Shape& s = p.shape;
  const size_t size = p.x.size(), c = static_cast<size_t>(s.c);
  const size_t mask_bytes = static_cast<size_t>(bnorm_relu_mask_bytes(s.n, s.c, s.spatial));
  const double eps = 1e-5;
  Outputs out;
  const auto keep = [&](const char* name, const auto& buffer) {
    out.bytes.emplace_back(name, buffer.bytes());
  };
  const auto expect_ok = [](bnorm_status status, const char* what) {
    EXPECT_EQ(status, BNORM_SUCCESS) << what << ": " << bnorm_last_error();
  };
  const OffsetBuffer<T> x(p.x, o.x), dy(p.dy, o.dy);
  const OffsetBuffer<T> weight(p.weight, o.per_channel), bias(p.bias, o.per_channel);
  const OffsetBuffer<T> running_mean(p.running_mean, o.per_channel);
  const OffsetBuffer<T> running_var(p.running_var, o.per_channel);
  const std::vector<T> zeros(c, T(0)), ones(c, T(1));

  // Forward training, plain and fused.
  OffsetBuffer<T> y(size, o.y), sm(c, o.per_channel), si(c, o.per_channel);
  OffsetBuffer<T> rm(zeros, o.per_channel), rv(ones, o.per_channel);
  expect_ok(CApi<T>::forward_training(s.layout(), s.n, s.c, s.spatial, x.data(), y.data(),
                                      weight.data(), bias.data(), eps, 0.1, rm.data(), rv.data(),
                                      sm.data(), si.data()),
            "forward_training");
  keep("y", y), keep("save_mean", sm), keep("save_invstd", si), keep("running_mean", rm);
  keep("running_var", rv);
  OffsetBuffer<T> fy(size, o.y), fsm(c, o.per_channel), fsi(c, o.per_channel);
  OffsetBuffer<uint8_t> mask(mask_bytes, o.mask);
  expect_ok(CApi<T>::relu_forward_training(s.layout(), s.n, s.c, s.spatial, x.data(), fy.data(),
                                           weight.data(), bias.data(), eps, nullptr, nullptr,
                                           nullptr, fsm.data(), fsi.data(), mask.data()),
            "relu_forward_training");
  keep("relu y", fy), keep("relu save_mean", fsm), keep("relu save_invstd", fsi);
  keep("relu mask", mask);
  OffsetBuffer<T> inplace(p.x, o.x);
  OffsetBuffer<uint8_t> inplace_mask(mask_bytes, o.mask);
  expect_ok(CApi<T>::relu_forward_training(s.layout(), s.n, s.c, s.spatial, inplace.data(),
                                           inplace.data(), weight.data(), bias.data(), eps,
                                           nullptr, nullptr, nullptr, nullptr, nullptr,
                                           inplace_mask.data()),
            "relu_forward_training in place");
  keep("relu y in place", inplace), keep("relu mask in place", inplace_mask);

  // Forward inference, plain and fused.
  OffsetBuffer<T> iy(size, o.y), fiy(size, o.y);
  OffsetBuffer<uint8_t> imask(mask_bytes, o.mask);
  expect_ok(CApi<T>::forward_inference(s.layout(), s.n, s.c, s.spatial, x.data(), iy.data(),
                                       weight.data(), bias.data(), running_mean.data(),
                                       running_var.data(), eps),
            "forward_inference");
  expect_ok(CApi<T>::relu_forward_inference(s.layout(), s.n, s.c, s.spatial, x.data(),
                                            fiy.data(), weight.data(), bias.data(),
                                            running_mean.data(), running_var.data(), eps,
                                            imask.data()),
            "relu_forward_inference");
  keep("inference y", iy), keep("relu inference y", fiy), keep("relu inference mask", imask);

  // Backward, plain and fused (y gate, mask gate, mask gate in place).
  OffsetBuffer<T> dx(size, o.dx), dw(c, o.per_channel), db(c, o.per_channel);
  expect_ok(CApi<T>::backward(s.layout(), s.n, s.c, s.spatial, x.data(), dy.data(), dx.data(),
                              weight.data(), sm.data(), si.data(), dw.data(), db.data()),
            "backward");
  keep("dx", dx), keep("dweight", dw), keep("dbias", db);
  OffsetBuffer<T> gdx(size, o.dx), gdw(c, o.per_channel), gdb(c, o.per_channel);
  expect_ok(CApi<T>::relu_backward(s.layout(), s.n, s.c, s.spatial, x.data(), fy.data(), nullptr,
                                   dy.data(), gdx.data(), weight.data(), fsm.data(), fsi.data(),
                                   gdw.data(), gdb.data()),
            "relu_backward, y gate");
  keep("relu dx (y gate)", gdx), keep("relu dweight (y gate)", gdw);
  keep("relu dbias (y gate)", gdb);
  OffsetBuffer<T> mdx(size, o.dx), mdw(c, o.per_channel), mdb(c, o.per_channel);
  expect_ok(CApi<T>::relu_backward(s.layout(), s.n, s.c, s.spatial, x.data(), nullptr,
                                   mask.data(), dy.data(), mdx.data(), weight.data(), fsm.data(),
                                   fsi.data(), mdw.data(), mdb.data()),
            "relu_backward, mask gate");
  keep("relu dx (mask gate)", mdx), keep("relu dweight (mask gate)", mdw);
  keep("relu dbias (mask gate)", mdb);
  OffsetBuffer<T> inplace_dx(p.dy, o.dy);
  expect_ok(CApi<T>::relu_backward(s.layout(), s.n, s.c, s.spatial, x.data(), nullptr,
                                   mask.data(), inplace_dx.data(), inplace_dx.data(),
                                   weight.data(), fsm.data(), fsi.data(), nullptr, nullptr),
            "relu_backward in place");
  keep("relu dx in place", inplace_dx);

  // Backward with fixed statistics, plain and fused.
  OffsetBuffer<T> idx(size, o.dx), idw(c, o.per_channel), idb(c, o.per_channel);
  expect_ok(CApi<T>::backward_inference(s.layout(), s.n, s.c, s.spatial, x.data(), dy.data(),
                                        idx.data(), weight.data(), running_mean.data(),
                                        running_var.data(), eps, idw.data(), idb.data()),
            "backward_inference");
  keep("inference dx", idx), keep("inference dweight", idw), keep("inference dbias", idb);
  OffsetBuffer<T> gidx(size, o.dx), gidw(c, o.per_channel), gidb(c, o.per_channel);
  expect_ok(CApi<T>::relu_backward_inference(s.layout(), s.n, s.c, s.spatial, x.data(),
                                             fiy.data(), nullptr, dy.data(), gidx.data(),
                                             weight.data(), running_mean.data(),
                                             running_var.data(), eps, gidw.data(), gidb.data()),
            "relu_backward_inference, y gate");
  keep("relu inference dx (y gate)", gidx), keep("relu inference dweight (y gate)", gidw);
  keep("relu inference dbias (y gate)", gidb);
  OffsetBuffer<T> midx(size, o.dx), midw(c, o.per_channel), midb(c, o.per_channel);
  expect_ok(CApi<T>::relu_backward_inference(s.layout(), s.n, s.c, s.spatial, x.data(), nullptr,
                                             imask.data(), dy.data(), midx.data(),
                                             weight.data(), running_mean.data(),
                                             running_var.data(), eps, midw.data(), midb.data()),
            "relu_backward_inference, mask gate");
  keep("relu inference dx (mask gate)", midx), keep("relu inference dweight (mask gate)", midw);
  keep("relu inference dbias (mask gate)", midb);
  OffsetBuffer<T> inplace_idx(p.dy, o.dy);
  expect_ok(CApi<T>::relu_backward_inference(s.layout(), s.n, s.c, s.spatial, x.data(),
                                             fiy.data(), nullptr, inplace_idx.data(),
                                             inplace_idx.data(), weight.data(),
                                             running_mean.data(), running_var.data(), eps,
                                             nullptr, nullptr),
            "relu_backward_inference in place");
  keep("relu inference dx in place", inplace_idx);

  out.y = y.as_double(), out.relu_y = fy.as_double();
  out.iy = iy.as_double(), out.relu_iy = fiy.as_double();
  out.dx = dx.as_double(), out.dweight = dw.as_double(), out.dbias = db.as_double();
  out.relu_dx = gdx.as_double(), out.relu_dweight = gdw.as_double();
  out.relu_dbias = gdb.as_double();
  out.idx = idx.as_double(), out.idweight = idw.as_double(), out.idbias = idb.as_double();
  out.relu_idx = gidx.as_double(), out.relu_idweight = gidw.as_double();
  out.relu_idbias = gidb.as_double();
  out.relu_dy = test::relu_gated(test::to_double(p.dy), out.relu_y);
  out.relu_idy = test::relu_gated(test::to_double(p.dy), out.relu_iy);
  return out;
}

// Every output of the aligned run against the reference.
template <class T>
void expect_close_to_reference(const Problem<T>& p, const Outputs& got) {
  const Shape& s = p.shape;
  const auto g = s.geometry();
  const double eps = 1e-5;
  const auto xd = test::to_double(p.x), dyd = test::to_double(p.dy);
  const auto wd = test::to_double(p.weight), bd = test::to_double(p.bias);
  const auto rm = test::to_double(p.running_mean), rv = test::to_double(p.running_var);
  const size_t size = xd.size(), c = static_cast<size_t>(s.c);
  const auto relu_of = [](std::vector<double> v) {
    for (double& value : v) value = test::relu(value);
    return v;
  };
  constexpr double fwd = Tolerance<T>::forward, bwd = Tolerance<T>::backward;

  std::vector<double> y(size), mean(c), var(c);
  reference::batch_norm_forward_training(g, xd.data(), y.data(), wd.data(), bd.data(), eps,
                                         mean.data(), var.data());
  EXPECT_LE(test::max_relative_error(got.y, y), fwd);
  EXPECT_LE(test::max_relative_error(got.relu_y, relu_of(y)), fwd);
  reference::batch_norm_forward_inference(g, xd.data(), y.data(), wd.data(), bd.data(), rm.data(),
                                          rv.data(), eps);
  EXPECT_LE(test::max_relative_error(got.iy, y), fwd);
  EXPECT_LE(test::max_relative_error(got.relu_iy, relu_of(y)), fwd);

  std::vector<double> dx(size), dw(c), db(c);
  reference::batch_norm_backward(g, xd.data(), dyd.data(), wd.data(), eps, dx.data(), dw.data(),
                                 db.data());
  EXPECT_LE(test::max_relative_error(got.dx, dx), bwd);
  EXPECT_LE(test::max_relative_error(got.dweight, dw), bwd);
  EXPECT_LE(test::max_relative_error(got.dbias, db), bwd);
  reference::batch_norm_backward(g, xd.data(), got.relu_dy.data(), wd.data(), eps, dx.data(),
                                 dw.data(), db.data());
  EXPECT_LE(test::max_relative_error(got.relu_dx, dx), bwd);
  EXPECT_LE(test::max_relative_error(got.relu_dweight, dw), bwd);
  EXPECT_LE(test::max_relative_error(got.relu_dbias, db), bwd);
  reference::batch_norm_backward_inference(g, xd.data(), dyd.data(), wd.data(), rm.data(),
                                           rv.data(), eps, dx.data(), dw.data(), db.data());
  EXPECT_LE(test::max_relative_error(got.idx, dx), fwd);
  EXPECT_LE(test::max_relative_error(got.idweight, dw), bwd);
  EXPECT_LE(test::max_relative_error(got.idbias, db), bwd);
  reference::batch_norm_backward_inference(g, xd.data(), got.relu_idy.data(), wd.data(),
                                           rm.data(), rv.data(), eps, dx.data(), dw.data(),
                                           db.data());
  EXPECT_LE(test::max_relative_error(got.relu_idx, dx), fwd);
  EXPECT_LE(test::max_relative_error(got.relu_idweight, dw), bwd);
  EXPECT_LE(test::max_relative_error(got.relu_idbias, db), bwd);
}

// Forces a streaming-store policy for the test's duration.
class StreamingPolicy {
 public:
  explicit StreamingPolicy(bool always) {
    kernels::override_streaming_policy(always ? 0 : std::numeric_limits<int64_t>::max());
  }
  ~StreamingPolicy() { kernels::override_streaming_policy(-1); }
  StreamingPolicy(const StreamingPolicy&) = delete;
  StreamingPolicy& operator=(const StreamingPolicy&) = delete;
};

template <class T>
class Misaligned : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(Misaligned, Types);

TYPED_TEST(Misaligned, ResultsDoNotDependOnAlignment) {
  using T = TypeParam;
  // Odd sizes; rows of < 16 channels (flat runs) and of > 256 (column blocks); channels
  // longer than a chunk (8192) and an elementwise piece (16384); two above the parallel
  // threshold (32768 values).
  const Shape shapes[] = {{3, 7, 33, false},   {3, 7, 33, true},     {2, 17, 65, false},
                          {2, 17, 65, true},   {5, 3, 3073, false},  {1, 33, 17, true},
                          {2, 300, 15, true},  {3, 130, 7, false},   {2, 5, 16411, false},
                          {7, 15, 1001, true}, {3, 5, 6767, false},  {9, 1, 1, false}};
  uint32_t seed = 2000;
  for (const Shape& s : shapes) {
    SCOPED_TRACE(s.name());
    const Problem<T> p(s, seed++);
    Outputs aligned;
    {
      const StreamingPolicy never(false);
      aligned = run_all(p, kAligned);
    }
    expect_close_to_reference(p, aligned);
    for (bool streaming : {false, true}) {
      const StreamingPolicy policy(streaming);
      for (const Offsets& o : kMisaligned) {
        SCOPED_TRACE(o.name() + (streaming ? ", streaming stores" : ", ordinary stores"));
        const Outputs got = run_all(p, o);
        ASSERT_EQ(got.bytes.size(), aligned.bytes.size());
        for (size_t k = 0; k < got.bytes.size(); ++k)
          EXPECT_TRUE(test::bitwise_equal(got.bytes[k].second, aligned.bytes[k].second))
              << got.bytes[k].first << " differs from the aligned run";
      }
    }
  }
}

}  // namespace
}  // namespace bnorm
