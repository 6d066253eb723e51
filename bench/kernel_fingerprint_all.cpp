// A/B tool for kernel reorganizations: every batch-norm pass of the C API (training and
// inference forwards, both backwards, the fused-ReLU twins with mask and with y as the
// gate, in place) on a sweep of shapes chosen to take every path of the kernels
// (channels-first chunks, long rows cut in pieces, short-row blocks, fused and separate
// passes; channels-last flat rows, column blocks, wide rows; (N, C) input), float32 and
// float64, 1, 2 and 3 threads. Prints one line per case: the shape and an FNV-1a hash of
// the bits of every output. Two builds whose outputs diff equal computed the same bits.
// After batch norm's lines, the family's: group norm (both layouts, fused and separate
// paths), instance norm with running statistics, layer norm and RMS norm (rows shorter and
// longer than a chunk), forward and backward with every output.
//   build/bench/kernel_fingerprint_all > before.txt   (then the same after; diff)
#include <bnorm/bnorm.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

struct Shape {
  int64_t n, c, spatial;
  bnorm_layout layout;
};

uint64_t hash_bytes(uint64_t h, const void* data, size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

template <class T>
uint64_t hash_all(uint64_t h, const std::vector<T>& v) {
  return hash_bytes(h, v.data(), v.size() * sizeof(T));
}

void check(bnorm_status status, const char* what) {
  if (status == BNORM_SUCCESS) return;
  std::fprintf(stderr, "%s failed: %s\n", what, bnorm_last_error());
  std::exit(1);
}

// The C API's functions of one element type.
template <class T>
struct Api;
#define BNORM_API_OF(T, S)                                                      \
  template <>                                                                   \
  struct Api<T> {                                                               \
    static constexpr auto train = bnorm_batch_norm_forward_training_ex_##S;     \
    static constexpr auto infer = bnorm_batch_norm_forward_inference_##S;       \
    static constexpr auto backward = bnorm_batch_norm_backward_##S;             \
    static constexpr auto backward_infer = bnorm_batch_norm_backward_inference_##S; \
    static constexpr auto relu_train = bnorm_batch_norm_relu_forward_training_##S; \
    static constexpr auto relu_infer = bnorm_batch_norm_relu_forward_inference_##S; \
    static constexpr auto relu_backward = bnorm_batch_norm_relu_backward_##S;   \
    static constexpr auto relu_backward_infer = bnorm_batch_norm_relu_backward_inference_##S; \
  };
BNORM_API_OF(float, f32)
BNORM_API_OF(double, f64)
#undef BNORM_API_OF

template <class T>
uint64_t fingerprint(const Shape& s) {
  using A = Api<T>;
  const auto size = static_cast<size_t>(s.n * s.c * s.spatial);
  const auto c = static_cast<size_t>(s.c);
  std::vector<T> x(size), dy(size), y(size), dx(size), work(size);
  std::vector<T> weight(c), bias(c), rmean(c), rvar(c), mean(c), invstd(c), dw(c), db(c);
  uint32_t r = 12345;
  auto next = [&] {
    r = r * 1664525u + 1013904223u;
    return static_cast<double>(r >> 8) / 16777216.0;
  };
  // A large mean in half the channels (the precision paths), spread per channel.
  for (size_t i = 0; i < size; ++i) x[i] = static_cast<T>(next() * 3 + (i % 2 ? 1000.0 : -0.5));
  for (T& v : dy) v = static_cast<T>(next() - 0.5);
  for (size_t k = 0; k < c; ++k) {
    weight[k] = static_cast<T>(0.5 + next());
    bias[k] = static_cast<T>(next() - 0.5);
    rmean[k] = static_cast<T>(next());
    rvar[k] = static_cast<T>(0.5 + next());
  }
  const int64_t mask_bytes = bnorm_relu_mask_bytes(s.n, s.c, s.spatial);
  std::vector<uint8_t> mask(static_cast<size_t>(mask_bytes));
  uint64_t h = 1469598103934665603ull;
  bnorm_running_stats_update update{0.1, BNORM_RUNNING_VAR_UNBIASED, nullptr};

  std::vector<T> rm = rmean, rv = rvar;
  check(A::train(s.layout, s.n, s.c, s.spatial, x.data(), y.data(), weight.data(), bias.data(),
                 1e-5, &update, rm.data(), rv.data(), mean.data(), invstd.data()),
        "training forward");
  h = hash_all(hash_all(hash_all(hash_all(hash_all(h, y), rm), rv), mean), invstd);
  check(A::backward(s.layout, s.n, s.c, s.spatial, x.data(), dy.data(), dx.data(), weight.data(),
                    mean.data(), invstd.data(), dw.data(), db.data()),
        "backward");
  h = hash_all(hash_all(hash_all(h, dx), dw), db);
  // Backward with only dx, then with only the parameter gradients.
  check(A::backward(s.layout, s.n, s.c, s.spatial, x.data(), dy.data(), dx.data(), nullptr,
                    mean.data(), invstd.data(), nullptr, nullptr),
        "backward dx only");
  check(A::backward(s.layout, s.n, s.c, s.spatial, x.data(), dy.data(), nullptr, weight.data(),
                    mean.data(), invstd.data(), dw.data(), db.data()),
        "backward sums only");
  h = hash_all(hash_all(hash_all(h, dx), dw), db);
  check(A::infer(s.layout, s.n, s.c, s.spatial, x.data(), y.data(), weight.data(), bias.data(),
                 rmean.data(), rvar.data(), 1e-5),
        "inference forward");
  h = hash_all(h, y);
  check(A::backward_infer(s.layout, s.n, s.c, s.spatial, x.data(), dy.data(), dx.data(),
                          weight.data(), rmean.data(), rvar.data(), 1e-5, dw.data(), db.data()),
        "inference backward");
  h = hash_all(hash_all(hash_all(h, dx), dw), db);

  // Fused ReLU: forward with a mask, backward gated by the mask and by y.
  rm = rmean, rv = rvar;
  check(A::relu_train(s.layout, s.n, s.c, s.spatial, x.data(), y.data(), weight.data(),
                      bias.data(), 1e-5, &update, rm.data(), rv.data(), mean.data(),
                      invstd.data(), mask.data()),
        "relu training forward");
  h = hash_all(hash_all(hash_all(hash_all(h, y), mean), invstd), mask);
  check(A::relu_backward(s.layout, s.n, s.c, s.spatial, x.data(), nullptr, mask.data(),
                         dy.data(), dx.data(), weight.data(), mean.data(), invstd.data(),
                         dw.data(), db.data()),
        "relu backward (mask)");
  h = hash_all(hash_all(hash_all(h, dx), dw), db);
  check(A::relu_backward(s.layout, s.n, s.c, s.spatial, x.data(), y.data(), nullptr, dy.data(),
                         dx.data(), weight.data(), mean.data(), invstd.data(), dw.data(),
                         db.data()),
        "relu backward (y)");
  h = hash_all(hash_all(hash_all(h, dx), dw), db);
  check(A::relu_infer(s.layout, s.n, s.c, s.spatial, x.data(), y.data(), weight.data(),
                      bias.data(), rmean.data(), rvar.data(), 1e-5, mask.data()),
        "relu inference forward");
  h = hash_all(hash_all(h, y), mask);
  check(A::relu_backward_infer(s.layout, s.n, s.c, s.spatial, x.data(), nullptr, mask.data(),
                               dy.data(), dx.data(), weight.data(), rmean.data(), rvar.data(),
                               1e-5, dw.data(), db.data()),
        "relu inference backward (mask)");
  h = hash_all(hash_all(hash_all(h, dx), dw), db);

  // In place: y = x, dx = dy.
  work = x;
  check(A::train(s.layout, s.n, s.c, s.spatial, work.data(), work.data(), weight.data(),
                 bias.data(), 1e-5, &update, nullptr, nullptr, mean.data(), invstd.data()),
        "training forward in place");
  h = hash_all(h, work);
  work = dy;
  check(A::backward(s.layout, s.n, s.c, s.spatial, x.data(), work.data(), work.data(),
                    weight.data(), mean.data(), invstd.data(), dw.data(), db.data()),
        "backward in place");
  return hash_all(hash_all(hash_all(h, work), dw), db);
}

// The family: group/instance norm on (n, c, spatial) with `groups`, layer/RMS norm on
// (rows, cols) = (n * c, spatial).
template <class T>
struct FamilyApi;
#define BNORM_FAMILY_API_OF(T, S)                                              \
  template <>                                                                  \
  struct FamilyApi<T> {                                                        \
    static constexpr auto gn = bnorm_group_norm_forward_##S;                   \
    static constexpr auto gn_backward = bnorm_group_norm_backward_##S;         \
    static constexpr auto in_train = bnorm_instance_norm_forward_training_##S; \
    static constexpr auto ln = bnorm_layer_norm_forward_##S;                   \
    static constexpr auto ln_backward = bnorm_layer_norm_backward_##S;         \
    static constexpr auto rms = bnorm_rms_norm_forward_##S;                    \
    static constexpr auto rms_backward = bnorm_rms_norm_backward_##S;          \
  };
BNORM_FAMILY_API_OF(float, f32)
BNORM_FAMILY_API_OF(double, f64)
#undef BNORM_FAMILY_API_OF

template <class T>
uint64_t family_fingerprint(const Shape& s, int64_t groups) {
  using A = FamilyApi<T>;
  const auto size = static_cast<size_t>(s.n * s.c * s.spatial);
  const auto c = static_cast<size_t>(s.c), ng = static_cast<size_t>(s.n * groups);
  const auto rows = static_cast<size_t>(s.n * s.c), cols = static_cast<size_t>(s.spatial);
  std::vector<T> x(size), dy(size), y(size), dx(size), weight(std::max(c, cols)),
      bias(std::max(c, cols)), dw(std::max(c, cols)), db(std::max(c, cols));
  std::vector<T> mean(std::max(ng, rows)), rstd(std::max(ng, rows)), rm(c, T(0)), rv(c, T(1));
  uint32_t r = 777;
  auto next = [&] {
    r = r * 1664525u + 1013904223u;
    return static_cast<double>(r >> 8) / 16777216.0;
  };
  for (size_t i = 0; i < size; ++i) x[i] = static_cast<T>(next() * 3 + (i % 3 ? 500.0 : 0.25));
  for (T& v : dy) v = static_cast<T>(next() - 0.5);
  for (size_t k = 0; k < weight.size(); ++k) {
    weight[k] = static_cast<T>(0.5 + next());
    bias[k] = static_cast<T>(next() - 0.5);
  }
  uint64_t h = 1469598103934665603ull;
  check(A::gn(s.layout, s.n, s.c, s.spatial, groups, x.data(), y.data(), weight.data(),
              bias.data(), 1e-5, mean.data(), rstd.data()),
        "group norm forward");
  h = hash_all(hash_all(hash_all(h, y), mean), rstd);
  check(A::gn_backward(s.layout, s.n, s.c, s.spatial, groups, x.data(), dy.data(), dx.data(),
                       weight.data(), mean.data(), rstd.data(), dw.data(), db.data()),
        "group norm backward");
  h = hash_all(hash_all(hash_all(h, dx), dw), db);
  if (s.spatial > 1) {
    check(A::in_train(s.layout, s.n, s.c, s.spatial, x.data(), y.data(), weight.data(),
                      bias.data(), 1e-5, 0.1, rm.data(), rv.data(), nullptr, nullptr),
          "instance norm forward");
    h = hash_all(hash_all(hash_all(h, y), rm), rv);
  }
  check(A::ln(s.n * s.c, s.spatial, x.data(), y.data(), weight.data(), bias.data(), 1e-5,
              mean.data(), rstd.data()),
        "layer norm forward");
  h = hash_all(hash_all(hash_all(h, y), mean), rstd);
  check(A::ln_backward(s.n * s.c, s.spatial, x.data(), dy.data(), dx.data(), weight.data(),
                       mean.data(), rstd.data(), dw.data(), db.data()),
        "layer norm backward");
  h = hash_all(hash_all(hash_all(h, dx), dw), db);
  check(A::rms(s.n * s.c, s.spatial, x.data(), y.data(), weight.data(), 1e-6, rstd.data()),
        "RMS norm forward");
  h = hash_all(hash_all(h, y), rstd);
  check(A::rms_backward(s.n * s.c, s.spatial, x.data(), dy.data(), dx.data(), weight.data(),
                        rstd.data(), dw.data()),
        "RMS norm backward");
  return hash_all(hash_all(h, dx), dw);
}

}  // namespace

int main() {
  const bnorm_layout cf = BNORM_CHANNELS_FIRST, cl = BNORM_CHANNELS_LAST;
  const Shape shapes[] = {
      {2, 3, 5, cf},      {4, 7, 33, cf},        {256, 16, 64, cf},  {8, 6, 576, cf},
      {2, 3, 20000, cf},  {1, 1, 100003, cf},    {64, 8, 1, cf},     {3, 300, 1, cf},
      {32, 64, 17, cf},   {16, 40, 1024, cf},    {64, 4, 3136, cf},  {3, 2, 40000, cf},
      {64, 33, 100, cf},  {128, 16, 100, cf},    {2, 5, 3, cl},      {7, 13, 3, cl},
      {4, 300, 33, cl},   {8, 64, 49, cl},       {16, 3, 5000, cl},  {2, 1024, 9, cl},
      {32, 256, 196, cl}, {2, 17, 1, cl},        {5, 6, 7, cl},      {9, 48, 25, cl},
  };
  for (int threads : {1, 2, 3}) {
    bnorm_set_num_threads(threads);
    for (const Shape& s : shapes) {
      std::printf("threads %d  (%lld, %lld, %lld) %s  f32 %016llx  f64 %016llx\n", threads,
                  static_cast<long long>(s.n), static_cast<long long>(s.c),
                  static_cast<long long>(s.spatial), s.layout == cl ? "cl" : "cf",
                  static_cast<unsigned long long>(fingerprint<float>(s)),
                  static_cast<unsigned long long>(fingerprint<double>(s)));
    }
  }
  struct FamilyCase {
    Shape shape;
    int64_t groups;
  };
  const FamilyCase family[] = {
      {{32, 64, 49, cf}, 32}, {{32, 64, 49, cl}, 32}, {{2, 6, 9000, cf}, 3},
      {{2, 6, 9000, cl}, 3},  {{4, 300, 7, cl}, 300}, {{5, 12, 1, cf}, 4},
      {{3, 16, 768, cf}, 16}, {{1, 4, 20000, cf}, 1},
  };
  for (int threads : {1, 2, 3}) {
    bnorm_set_num_threads(threads);
    for (const FamilyCase& f : family)
      std::printf("threads %d  family (%lld, %lld, %lld) %s G=%lld  f32 %016llx  f64 %016llx\n",
                  threads, static_cast<long long>(f.shape.n), static_cast<long long>(f.shape.c),
                  static_cast<long long>(f.shape.spatial), f.shape.layout == cl ? "cl" : "cf",
                  static_cast<long long>(f.groups),
                  static_cast<unsigned long long>(family_fingerprint<float>(f.shape, f.groups)),
                  static_cast<unsigned long long>(family_fingerprint<double>(f.shape, f.groups)));
  }
  return 0;
}
