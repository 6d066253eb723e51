// Once the first batches have sized every buffer, a training step and an evaluation
// allocate nothing: every global operator new in this test binary is counted.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "nn/trainer.h"
#include "synthetic_data.h"

namespace {
std::atomic<long> g_allocations{0};
}  // namespace

void* operator new(std::size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return operator new(size); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace bnorm::nn {
namespace {

long allocations_during(const std::function<void()>& work) {
  const long before = g_allocations.load();
  work();
  return g_allocations.load() - before;
}

TEST(SteadyState, TrainingAndEvaluationAllocateNothing) {
  // 200 = 3 x 64 + 8: full batches and a smaller last one, both sized in warm-up.
  const data::ImageDataset train = testing::synthetic_images(200, 1);
  const data::ImageDataset test = testing::synthetic_images(100, 2);
  for (const std::string model : {"lenet-bn", "lenet", "mlp-bn", "vgg-bn", "lenet-ln", "lenet-gn",
                                  "lenet-in", "mlp-ln"}) {
    TrainOptions o;
    o.model = model;
    o.batch_size = 64;
    o.sgd = {0.1, 0.9, 1e-4};
    Trainer t(o);
    t.train_epoch(train, &test);  // warm-up: sizes every buffer
    t.train_epoch(train, &test);
    const long n = allocations_during([&] {
      t.train_epoch(train, &test);
      t.train_steps(train, 3);
    });
    EXPECT_EQ(n, 0) << model << ": heap allocations in a steady-state epoch";
  }
}

}  // namespace
}  // namespace bnorm::nn
