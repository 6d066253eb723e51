// The aliasing rule (bnorm.h, "Aliasing"): a buffer a call writes shares no byte with
// any other buffer of the call, except y == x (forwards) and dx == dy (backwards)
// exactly. Every call, every written argument against every other argument, overlapping
// the other's first bytes and its last ones: BNORM_ERROR_OVERLAP naming both, and not a
// byte of any buffer changed. The in-place pairs, and reads sharing memory, still work.
#include <gtest/gtest.h>

#include <bnorm/bnorm.h>
#include <bnorm/bnorm.hpp>

#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "test_support.h"

namespace bnorm::test {
namespace {

constexpr int64_t N = 4, C = 3, S = 16;  // 192 values, a 24-byte ReLU mask

// One argument of a call: its name (as bnorm.h), its bytes, whether the call writes it.
struct Arg {
  std::string name;
  int64_t bytes;
  bool written;
};

// A C API call whose arguments the test places: run(p) passes p[i] for args[i].
struct Call {
  std::string name;
  std::vector<Arg> args;
  std::function<bnorm_status(const std::vector<void*>&)> run;
};

template <class T>
std::vector<Call> every_call(bnorm_layout L) {
  const int64_t tb = N * C * S * int64_t{sizeof(T)}, cb = C * int64_t{sizeof(T)};
  const int64_t mb = bnorm_relu_mask_bytes(N, C, S);
  auto t = [](void* p) { return static_cast<T*>(p); };
  auto u8 = [](void* p) { return static_cast<uint8_t*>(p); };
  const Arg x{"x", tb, false}, y{"y", tb, true}, y_read{"y", tb, false}, dy{"dy", tb, false},
      dx{"dx", tb, true}, weight{"weight", cb, false}, bias{"bias", cb, false},
      rm{"running_mean", cb, false}, rv{"running_var", cb, false},
      rm_w{"running_mean", cb, true}, rv_w{"running_var", cb, true},
      save_mean{"save_mean", cb, true}, save_invstd{"save_invstd", cb, true},
      save_mean_r{"save_mean", cb, false}, save_invstd_r{"save_invstd", cb, false},
      dweight{"dweight", cb, true}, dbias{"dbias", cb, true},
      mask{"relu_mask", mb, true}, mask_r{"relu_mask", mb, false},
      nbt{"num_batches_tracked", 8, true};
  return {
      {"forward_training_ex",
       {x, y, weight, bias, rm_w, rv_w, save_mean, save_invstd, nbt},
       [=](const std::vector<void*>& p) {
         const bnorm_running_stats_update u{0.1, BNORM_RUNNING_VAR_UNBIASED,
                                            static_cast<int64_t*>(p[8])};
         return CApi<T>::forward_training_ex(L, N, C, S, t(p[0]), t(p[1]), t(p[2]), t(p[3]),
                                             1e-5, &u, t(p[4]), t(p[5]), t(p[6]), t(p[7]));
       }},
      {"forward_training",
       {x, y, weight, bias, rm_w, rv_w, save_mean, save_invstd},
       [=](const std::vector<void*>& p) {
         return CApi<T>::forward_training(L, N, C, S, t(p[0]), t(p[1]), t(p[2]), t(p[3]), 1e-5,
                                          0.1, t(p[4]), t(p[5]), t(p[6]), t(p[7]));
       }},
      {"relu_forward_training",
       {x, y, weight, bias, rm_w, rv_w, save_mean, save_invstd, mask},
       [=](const std::vector<void*>& p) {
         return CApi<T>::relu_forward_training(L, N, C, S, t(p[0]), t(p[1]), t(p[2]), t(p[3]),
                                               1e-5, nullptr, t(p[4]), t(p[5]), t(p[6]),
                                               t(p[7]), u8(p[8]));
       }},
      {"forward_inference",
       {x, y, weight, bias, rm, rv},
       [=](const std::vector<void*>& p) {
         return CApi<T>::forward_inference(L, N, C, S, t(p[0]), t(p[1]), t(p[2]), t(p[3]),
                                           t(p[4]), t(p[5]), 1e-5);
       }},
      {"relu_forward_inference",
       {x, y, weight, bias, rm, rv, mask},
       [=](const std::vector<void*>& p) {
         return CApi<T>::relu_forward_inference(L, N, C, S, t(p[0]), t(p[1]), t(p[2]), t(p[3]),
                                                t(p[4]), t(p[5]), 1e-5, u8(p[6]));
       }},
      {"backward",
       {x, dy, dx, weight, save_mean_r, save_invstd_r, dweight, dbias},
       [=](const std::vector<void*>& p) {
         return CApi<T>::backward(L, N, C, S, t(p[0]), t(p[1]), t(p[2]), t(p[3]), t(p[4]),
                                  t(p[5]), t(p[6]), t(p[7]));
       }},
      {"relu_backward (y gate)",
       {x, y_read, dy, dx, weight, save_mean_r, save_invstd_r, dweight, dbias},
       [=](const std::vector<void*>& p) {
         return CApi<T>::relu_backward(L, N, C, S, t(p[0]), t(p[1]), nullptr, t(p[2]), t(p[3]),
                                       t(p[4]), t(p[5]), t(p[6]), t(p[7]), t(p[8]));
       }},
      {"relu_backward (mask gate)",
       {x, mask_r, dy, dx, weight, save_mean_r, save_invstd_r, dweight, dbias},
       [=](const std::vector<void*>& p) {
         return CApi<T>::relu_backward(L, N, C, S, t(p[0]), nullptr, u8(p[1]), t(p[2]), t(p[3]),
                                       t(p[4]), t(p[5]), t(p[6]), t(p[7]), t(p[8]));
       }},
      {"backward_inference",
       {x, dy, dx, weight, rm, rv, dweight, dbias},
       [=](const std::vector<void*>& p) {
         return CApi<T>::backward_inference(L, N, C, S, t(p[0]), t(p[1]), t(p[2]), t(p[3]),
                                            t(p[4]), t(p[5]), 1e-5, t(p[6]), t(p[7]));
       }},
      {"relu_backward_inference (y gate)",
       {x, y_read, dy, dx, weight, rm, rv, dweight, dbias},
       [=](const std::vector<void*>& p) {
         return CApi<T>::relu_backward_inference(L, N, C, S, t(p[0]), t(p[1]), nullptr,
                                                 t(p[2]), t(p[3]), t(p[4]), t(p[5]), t(p[6]),
                                                 1e-5, t(p[7]), t(p[8]));
       }},
      {"relu_backward_inference (mask gate)",
       {x, mask_r, dy, dx, weight, rm, rv, dweight, dbias},
       [=](const std::vector<void*>& p) {
         return CApi<T>::relu_backward_inference(L, N, C, S, t(p[0]), nullptr, u8(p[1]),
                                                 t(p[2]), t(p[3]), t(p[4]), t(p[5]), t(p[6]),
                                                 1e-5, t(p[7]), t(p[8]));
       }},
  };
}

// One allocation holding every argument of a call in its own 64-byte aligned region,
// regions `gap` bytes apart (more than any argument spans, so an argument moved to
// overlap one region reaches no other), filled with T(1): valid values for every input
// (as int64_t, num_batches_tracked is positive).
template <class T>
struct Arena {
  std::vector<T> storage;
  std::vector<void*> home;  // each argument's own region
  explicit Arena(const Call& call) {
    int64_t gap = 0;
    for (const Arg& a : call.args) gap = std::max(gap, a.bytes);
    gap = (gap + 127) / 64 * 64;
    const int64_t bytes = gap * (2 * static_cast<int64_t>(call.args.size()) + 2) + 64;
    storage.assign(static_cast<size_t>(bytes) / sizeof(T) + 1, T(1));
    auto base = reinterpret_cast<uintptr_t>(storage.data());
    base = (base + 63) / 64 * 64 + gap;
    for (size_t i = 0; i < call.args.size(); ++i)
      home.push_back(reinterpret_cast<void*>(base + 2 * gap * i));
  }
  std::vector<uint8_t> bytes() const {
    std::vector<uint8_t> b(storage.size() * sizeof(T));
    std::memcpy(b.data(), storage.data(), b.size());
    return b;
  }
};

bool names_pair(const std::string& message, const std::string& a, const std::string& b) {
  return message.find(a + " overlaps " + b + " (") != std::string::npos ||
         message.find(b + " overlaps " + a + " (") != std::string::npos;
}

template <class T>
void expect_every_overlap_refused(bnorm_layout layout) {
  for (const Call& call : every_call<T>(layout)) {
    {
      Arena<T> arena(call);  // the arguments apart: a valid call
      ASSERT_EQ(call.run(arena.home), BNORM_SUCCESS) << call.name << ": " << bnorm_last_error();
    }
    for (size_t w = 0; w < call.args.size(); ++w) {
      if (!call.args[w].written) continue;
      for (size_t o = 0; o < call.args.size(); ++o) {
        if (o == w) continue;
        const Arg& wa = call.args[w];
        const Arg& oa = call.args[o];
        // w's last 8 bytes over o's first 8, and w's start inside o's last 8 bytes.
        for (const bool head : {true, false}) {
          SCOPED_TRACE(call.name + ": " + wa.name + (head ? " ending in the head of " : " starting in the tail of ") + oa.name);
          Arena<T> arena(call);
          std::vector<void*> p = arena.home;
          const auto o_begin = reinterpret_cast<uintptr_t>(p[o]);
          p[w] = reinterpret_cast<void*>(head ? o_begin - wa.bytes / 8 * 8 + 8
                                              : o_begin + (oa.bytes - 1) / 8 * 8);
          const std::vector<uint8_t> before = arena.bytes();
          ASSERT_EQ(call.run(p), BNORM_ERROR_OVERLAP) << bnorm_last_error();
          const std::string message = bnorm_last_error();
          EXPECT_TRUE(names_pair(message, wa.name, oa.name)) << message;
          EXPECT_TRUE(arena.bytes() == before) << "a refused call wrote";
        }
      }
    }
  }
}

TEST(Overlap, EveryWrittenArgumentAgainstEveryOtherFloat) {
  expect_every_overlap_refused<float>(BNORM_CHANNELS_FIRST);
}
TEST(Overlap, EveryWrittenArgumentAgainstEveryOtherDouble) {
  expect_every_overlap_refused<double>(BNORM_CHANNELS_LAST);
}

// The example of issue 9: save_mean over x, y three values past x.
TEST(Overlap, MessagesNameBothArguments) {
  std::vector<float> buffer(N * C * S + 3, 1.0f), running(2 * C, 1.0f), save(2 * C, 1.0f);
  float* x = buffer.data();
  EXPECT_EQ(bnorm_batch_norm_forward_training_f32(BNORM_CHANNELS_FIRST, N, C, S, x, x + 3,
                                                  nullptr, nullptr, 1e-5, 0.1, running.data(),
                                                  running.data() + C, save.data(),
                                                  save.data() + C),
            BNORM_ERROR_OVERLAP);
  EXPECT_STREQ(bnorm_last_error(),
               "bnorm_batch_norm_forward_training_f32: y overlaps x (partial overlap; only "
               "y == x in place is allowed)");
  std::vector<float> y(N * C * S);
  EXPECT_EQ(bnorm_batch_norm_forward_training_f32(BNORM_CHANNELS_FIRST, N, C, S, x, y.data(),
                                                  nullptr, nullptr, 1e-5, 0.1, running.data(),
                                                  running.data() + C, x, save.data() + C),
            BNORM_ERROR_OVERLAP);
  EXPECT_STREQ(bnorm_last_error(),
               "bnorm_batch_norm_forward_training_f32: save_mean overlaps x (an output must "
               "share no memory with another argument; only y == x in place is allowed)");
  for (float v : buffer) EXPECT_EQ(v, 1.0f);
  EXPECT_STREQ(bnorm_status_string(BNORM_ERROR_OVERLAP), "BNORM_ERROR_OVERLAP");
}

// Equal pointers other than the in-place pair are overlaps too.
TEST(Overlap, OnlyTheInPlacePairMayBeEqual) {
  const RandomProblem<float> pr({N, C, S, false}, 3, {0, 1, 0, 1});
  std::vector<float> x = pr.x, dx(x.size()), mean(C), invstd(C), running(C, 0.0f);
  EXPECT_EQ(bnorm_batch_norm_backward_f32(BNORM_CHANNELS_FIRST, N, C, S, x.data(),
                                          pr.dy.data(), x.data(), nullptr, mean.data(),
                                          invstd.data(), nullptr, nullptr),
            BNORM_ERROR_OVERLAP);
  EXPECT_NE(std::string(bnorm_last_error()).find("dx overlaps x ("), std::string::npos);
  EXPECT_EQ(bnorm_batch_norm_forward_training_f32(BNORM_CHANNELS_FIRST, N, C, S, x.data(),
                                                  dx.data(), nullptr, nullptr, 1e-5, 0.1,
                                                  running.data(), running.data(), nullptr,
                                                  nullptr),
            BNORM_ERROR_OVERLAP);
  EXPECT_NE(std::string(bnorm_last_error()).find("running_var overlaps running_mean ("),
            std::string::npos);
  EXPECT_EQ(bnorm_batch_norm_forward_training_f32(BNORM_CHANNELS_FIRST, N, C, S, x.data(),
                                                  dx.data(), nullptr, nullptr, 1e-5, 0.1,
                                                  running.data(), nullptr, running.data(),
                                                  nullptr),
            BNORM_ERROR_OVERLAP);
  EXPECT_NE(std::string(bnorm_last_error()).find("save_mean overlaps running_mean ("),
            std::string::npos);
  EXPECT_TRUE(bitwise_equal(x, pr.x));
}

// y == x and dx == dy in place give the out-of-place bits; inputs may share memory.
template <class T>
void expect_in_place_and_shared_reads_work(bool channels_last) {
  const Shape s{N, C, S, channels_last};
  const auto L = s.layout();
  const RandomProblem<T> pr(s, 4, {1, 2, 0, 1});
  std::vector<T> y(pr.x.size()), mean(C), invstd(C), dx(pr.x.size());
  ASSERT_EQ(CApi<T>::forward_training(L, N, C, S, pr.x.data(), y.data(), pr.weight.data(),
                                      pr.weight.data(), 1e-5, 0.1, nullptr, nullptr,
                                      mean.data(), invstd.data()),
            BNORM_SUCCESS);  // weight == bias: both read
  std::vector<T> inplace = pr.x;
  ASSERT_EQ(CApi<T>::forward_training(L, N, C, S, inplace.data(), inplace.data(),
                                      pr.weight.data(), pr.weight.data(), 1e-5, 0.1, nullptr,
                                      nullptr, nullptr, nullptr),
            BNORM_SUCCESS);
  EXPECT_TRUE(bitwise_equal(inplace, y));
  inplace = pr.x;
  ASSERT_EQ(CApi<T>::relu_forward_inference(L, N, C, S, inplace.data(), inplace.data(),
                                            pr.weight.data(), pr.bias.data(),
                                            pr.running_mean.data(), pr.running_var.data(), 1e-5,
                                            nullptr),
            BNORM_SUCCESS);
  ASSERT_EQ(CApi<T>::relu_forward_inference(L, N, C, S, pr.x.data(), y.data(), pr.weight.data(),
                                            pr.bias.data(), pr.running_mean.data(),
                                            pr.running_var.data(), 1e-5, nullptr),
            BNORM_SUCCESS);
  EXPECT_TRUE(bitwise_equal(inplace, y));
  ASSERT_EQ(CApi<T>::backward(L, N, C, S, pr.x.data(), pr.dy.data(), dx.data(),
                              pr.weight.data(), mean.data(), invstd.data(), nullptr, nullptr),
            BNORM_SUCCESS);
  inplace = pr.dy;
  ASSERT_EQ(CApi<T>::backward(L, N, C, S, pr.x.data(), inplace.data(), inplace.data(),
                              pr.weight.data(), mean.data(), invstd.data(), nullptr, nullptr),
            BNORM_SUCCESS);
  EXPECT_TRUE(bitwise_equal(inplace, dx));
  ASSERT_EQ(CApi<T>::backward_inference(L, N, C, S, pr.x.data(), pr.dy.data(), dx.data(),
                                        pr.weight.data(), pr.running_mean.data(),
                                        pr.running_var.data(), 1e-5, nullptr, nullptr),
            BNORM_SUCCESS);
  inplace = pr.dy;
  ASSERT_EQ(CApi<T>::backward_inference(L, N, C, S, pr.x.data(), inplace.data(), inplace.data(),
                                        pr.weight.data(), pr.running_mean.data(),
                                        pr.running_var.data(), 1e-5, nullptr, nullptr),
            BNORM_SUCCESS);
  EXPECT_TRUE(bitwise_equal(inplace, dx));
  // x == dy: both read.
  EXPECT_EQ(CApi<T>::backward(L, N, C, S, pr.x.data(), pr.x.data(), dx.data(), nullptr,
                              mean.data(), invstd.data(), nullptr, nullptr),
            BNORM_SUCCESS);
}

TEST(Overlap, InPlaceAndSharedReadsStillWorkFloat) {
  expect_in_place_and_shared_reads_work<float>(false);
  expect_in_place_and_shared_reads_work<float>(true);
}
TEST(Overlap, InPlaceAndSharedReadsStillWorkDouble) {
  expect_in_place_and_shared_reads_work<double>(true);
}

// The C++ API throws bnorm::Error with the C status, and writes nothing.
TEST(Overlap, CppApiThrows) {
  std::vector<float> buffer(N * C * S + 3, 1.0f), running(C, 0.0f);
  const TensorView<const float> x{buffer.data(), {N, C, S}};
  const TensorView<float> y{buffer.data() + 3, {N, C, S}};
  try {
    batch_norm_forward_training<float>(x, y, {}, {}, 1e-5, {}, running, {}, {}, {});
    ADD_FAILURE() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), BNORM_ERROR_OVERLAP);
    EXPECT_STREQ(e.what(), "batch_norm_forward_training: y overlaps x (partial overlap; only "
                           "y == x in place is allowed)");
  }
  BatchNorm<float> bn(C);
  try {
    bn.forward(x, y);
    ADD_FAILURE() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), BNORM_ERROR_OVERLAP);
  }
  for (float v : buffer) EXPECT_EQ(v, 1.0f);
  EXPECT_EQ(bn.num_batches_tracked(), 0);
  for (float v : running) EXPECT_EQ(v, 0.0f);
}

}  // namespace
}  // namespace bnorm::test
