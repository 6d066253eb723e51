// The trainer end to end on synthetic data: it learns, it is deterministic, and a
// run resumed from a checkpoint equals the unbroken run bit for bit.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "gradcheck.h"
#include "nn/batch_norm_layer.h"
#include "nn/linear.h"
#include "nn/trainer.h"
#include "synthetic_data.h"

namespace bnorm::nn {
namespace {

using testing::synthetic_images;

std::vector<float> all_parameters(Trainer& t) {
  std::vector<float> out;
  for (const auto& p : t.model().state().parameters) out.insert(out.end(), p.value.begin(), p.value.end());
  for (const auto& b : t.model().state().buffers) out.insert(out.end(), b.value.begin(), b.value.end());
  return out;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("bnorm_trainer_" + std::to_string(::getpid()) + "_" + name)).string();
}

TEST(Trainer, TinyNetworkOverfitsATinyBatch) {
  for (const std::string model : {"lenet-bn", "mlp-bn", "mlp"}) {
    const data::ImageDataset d = synthetic_images(32, 7);
    TrainOptions o;
    o.model = model;
    o.batch_size = 32;
    o.sgd = {0.5, 0.9, 0.0};
    Trainer t(o);
    EpochResult r;
    for (int e = 0; e < 120; ++e) r = t.train_epoch(d, nullptr);
    const Evaluation eval = t.evaluate(d);
    EXPECT_LT(r.train_loss, 0.05) << model;
    EXPECT_EQ(eval.accuracy, 1.0) << model;
  }
}

TEST(Trainer, SameSeedSameNumbers) {
  const data::ImageDataset train = synthetic_images(300, 1), test = synthetic_images(100, 2);
  TrainOptions o;
  o.batch_size = 64;  // 300 = 4 x 64 + 44: the last batch is smaller
  o.sgd = {0.5, 0.9, 1e-4};
  Trainer a(o), b(o);
  for (int e = 0; e < 2; ++e) {
    const EpochResult ra = a.train_epoch(train, &test), rb = b.train_epoch(train, &test);
    EXPECT_EQ(ra.train_loss, rb.train_loss);
    EXPECT_EQ(ra.train_acc, rb.train_acc);
    EXPECT_EQ(ra.test.loss, rb.test.loss);
    EXPECT_EQ(ra.test.accuracy, rb.test.accuracy);
  }
  EXPECT_TRUE(same_bits(all_parameters(a), all_parameters(b)));
  o.seed = 1;
  Trainer c(o);
  c.train_epoch(train, nullptr);
  EXPECT_FALSE(same_bits(all_parameters(a), all_parameters(c)));
}

TEST(Trainer, ResumedRunEqualsTheUnbrokenRun) {
  const data::ImageDataset train = synthetic_images(200, 3), test = synthetic_images(50, 4);
  for (const std::string model : {"lenet-bn", "vgg-bn"}) {  // vgg-bn: dropout's counter too
    TrainOptions o;
    o.model = model;
    o.batch_size = 48;
    o.sgd = {0.1, 0.9, 5e-4};  // momentum buffers must travel too
    Trainer unbroken(o);
    std::vector<EpochResult> straight;
    for (int e = 0; e < 4; ++e) straight.push_back(unbroken.train_epoch(train, &test));

    const std::string path = temp_path(model + ".ckpt");
    {
      Trainer first(o);
      first.train_epoch(train, &test);
      first.train_epoch(train, &test);
      first.save(path);
    }
    const Checkpoint c = read_checkpoint(path);
    Trainer resumed(Trainer::options_from(c, path));
    resumed.restore(c, path);
    EXPECT_EQ(resumed.epochs_done(), 2);
    for (int e = 2; e < 4; ++e) {
      const EpochResult r = resumed.train_epoch(train, &test);
      EXPECT_EQ(r.epoch, e + 1);
      EXPECT_EQ(r.train_loss, straight[static_cast<size_t>(e)].train_loss) << model;
      EXPECT_EQ(r.test.accuracy, straight[static_cast<size_t>(e)].test.accuracy) << model;
    }
    EXPECT_TRUE(same_bits(all_parameters(unbroken), all_parameters(resumed))) << model;
    std::filesystem::remove(path);
  }
}

TEST(Trainer, EvaluateRestoresTrainingMode) {
  const data::ImageDataset d = synthetic_images(20, 5);
  Trainer t(TrainOptions{});
  t.model().set_training(true);
  t.evaluate(d);
  EXPECT_TRUE(t.model().is_training());
}

// Evaluation over batch-level threads (replica_evaluation.h): each thread's batches go
// through a copy of the model. 1, 2 and 3 threads agree with a plain loop over the
// batches (up to OpenBLAS's rounding, which may follow its thread count), the result
// repeats exactly, the copies follow the model after it trains, and nothing of the
// model changes.
TEST(Trainer, ThreadedEvaluationMatchesOneBatchAtATime) {
  const data::ImageDataset train = synthetic_images(256, 1), test = synthetic_images(230, 2);
  for (const std::string model : {"lenet-bn", "vgg-bn", "mlp-ln"}) {
    TrainOptions o;
    o.model = model;
    o.batch_size = 32;  // 8 batches, the last of 6
    o.sgd = {0.05, 0.9, 0.0};
    Trainer t(o);
    t.train_steps(train, 4);
    for (int round = 0; round < 2; ++round) {  // the second after more training
      const std::vector<float> before = all_parameters(t);
      // The plain loop: the whole set as one evaluation per batch on one thread.
      double loss_sum = 0;
      int64_t correct = 0;
      for (int64_t b = 0; b < 230; b += 32) {
        data::ImageDataset part = test;
        part.count = std::min<int64_t>(32, 230 - b);
        part.images.assign(test.images.begin() + b * 784, test.images.begin() + (b + part.count) * 784);
        part.labels.assign(test.labels.begin() + b, test.labels.begin() + b + part.count);
        const testing::ScopedEngineThreads one(1);
        const Evaluation e = t.evaluate(part);
        loss_sum += e.loss * static_cast<double>(part.count);
        correct += static_cast<int64_t>(std::lround(e.accuracy * static_cast<double>(part.count)));
      }
      for (int threads : {1, 2, 3}) {
        const testing::ScopedEngineThreads scoped(threads);
        const Evaluation e = t.evaluate(test), again = t.evaluate(test);
        EXPECT_EQ(e.loss, again.loss) << model << ", " << threads << " threads";
        EXPECT_EQ(e.accuracy, again.accuracy) << model << ", " << threads << " threads";
        EXPECT_NEAR(e.loss, loss_sum / 230.0, 1e-5 * loss_sum / 230.0) << model << ", " << threads;
        EXPECT_NEAR(e.accuracy, static_cast<double>(correct) / 230.0, 1.5 / 230.0) << model;
      }
      EXPECT_TRUE(same_bits(before, all_parameters(t))) << model;
      EXPECT_TRUE(t.model().is_training()) << model;
      t.train_steps(train, 3);
    }
  }
}

TEST(Trainer, ThreadedEvaluationReportsALayersErrorInsteadOfAborting) {
  data::ImageDataset wrong = synthetic_images(100, 3);
  wrong.rows = 20;  // 20 x 39 images: LeNet-BN's layers cannot take them
  wrong.cols = 39;
  const testing::ScopedEngineThreads two(2);
  TrainOptions o;
  o.batch_size = 16;
  Trainer t(o);
  EXPECT_THROW(t.evaluate(wrong), std::invalid_argument);
  EXPECT_TRUE(t.model().is_training());
}

TEST(Trainer, RejectsBadOptions) {
  TrainOptions o;
  o.model = "resnet";
  EXPECT_THROW(Trainer{o}, std::invalid_argument);
  o.model = "lenet";
  o.batch_size = 0;
  EXPECT_THROW(Trainer{o}, std::invalid_argument);
  o.batch_size = 8;
  o.sgd.lr = -1;
  EXPECT_THROW(Trainer{o}, std::invalid_argument);
}

}  // namespace
}  // namespace bnorm::nn

namespace bnorm::nn {
namespace {

TEST(Trainer, PopulationStatisticsLeaveTrainingUnchanged) {
  const data::ImageDataset train = testing::synthetic_images(256, 8), test = testing::synthetic_images(64, 9);
  TrainOptions o;
  o.batch_size = 32;
  o.sgd = {0.5, 0.9, 0.0};
  Trainer plain(o), with(o);
  for (int e = 0; e < 2; ++e) {
    const EpochResult a = plain.train_epoch(train, &test);
    const EpochResult b = with.train_epoch(train, &test, {}, true);
    EXPECT_EQ(a.train_loss, b.train_loss);
    EXPECT_EQ(a.test.accuracy, b.test.accuracy);
    EXPECT_EQ(a.test_population.examples, 0);
    EXPECT_EQ(b.test_population.examples, 64);
  }
  EXPECT_TRUE(same_bits(all_parameters(plain), all_parameters(with)));  // buffers included
}

TEST(Trainer, CumulativeAverageOverBatchesIsAlgorithmTwo) {
  // The population pass resets the running statistics, sets momentum None and runs the
  // full training batches forward: that must give E[x] = mean of the batch means and
  // Var[x] = m/(m-1) * mean of the batch variances. Checked on mlp-bn's first BN layer
  // against the statistics of the linear layer's outputs computed here in double.
  const data::ImageDataset train = testing::synthetic_images(96, 10);
  TrainOptions o;
  o.model = "mlp-bn";  // flatten, linear(784, 256), bn1d(256), ...
  o.batch_size = 32;
  Trainer t(o);
  t.train_epoch(train, nullptr);
  // Expected statistics: the linear layer's outputs for each batch of 32, in order.
  auto& linear = dynamic_cast<Linear<float>&>(t.model().layer(1));
  std::vector<double> mean_of_means(256, 0.0), mean_of_vars(256, 0.0);
  for (int b = 0; b < 3; ++b) {
    for (int64_t c = 0; c < 256; ++c) {
      double s = 0, s2 = 0;
      std::vector<double> v(32);
      for (int64_t i = 0; i < 32; ++i) {
        const float* img = train.images.data() + (b * 32 + i) * 784;
        double z = linear.bias()[static_cast<size_t>(c)];
        for (int64_t k = 0; k < 784; ++k) z += double(linear.weight()[static_cast<size_t>(c * 784 + k)]) * img[k];
        v[static_cast<size_t>(i)] = z;
        s += z;
      }
      const double m = s / 32;
      for (double z : v) s2 += (z - m) * (z - m);
      mean_of_means[static_cast<size_t>(c)] += m / 3;
      mean_of_vars[static_cast<size_t>(c)] += s2 / 31 / 3;  // unbiased = m/(m-1) * biased
    }
  }
  auto& bn = dynamic_cast<BatchNormLayer<float>&>(t.model().layer(2)).module();
  bn.set_momentum(std::nullopt);
  bn.reset_running_stats();
  t.model().set_training(true);
  Tensor<float> x(Shape{32, 1, 28, 28});
  for (int b = 0; b < 3; ++b) {
    std::copy(train.images.begin() + b * 32 * 784, train.images.begin() + (b + 1) * 32 * 784, x.data());
    t.model().forward(x);
  }
  for (size_t c = 0; c < 256; ++c) {
    EXPECT_NEAR(bn.running_mean()[c], mean_of_means[c], 1e-4 * (1 + std::abs(mean_of_means[c])));
    EXPECT_NEAR(bn.running_var()[c], mean_of_vars[c], 1e-3 * (1 + mean_of_vars[c]));
  }
}

}  // namespace
}  // namespace bnorm::nn

namespace bnorm::nn {
namespace {

// Divergence (docs/failure.md): the first non-finite batch loss stops the epoch, and so
// does a non-finite parameter or statistic after a finite epoch; epochs_done() stays.
TEST(Trainer, ANonFiniteLossStopsAtThatBatch) {
  const data::ImageDataset d = testing::synthetic_images(96, 3);
  TrainOptions o;
  o.model = "mlp";
  o.batch_size = 32;
  o.sgd = {1e30, 0.0, 0.0};
  Trainer t(o);
  try {
    t.train_epoch(d, nullptr);
    FAIL() << "no TrainingDiverged";
  } catch (const TrainingDiverged& e) {
    EXPECT_EQ(e.epoch, 1);
    EXPECT_GE(e.batch, 2);  // the first step is taken with finite weights
    EXPECT_EQ(e.batches, 3);
    EXPECT_NE(std::string(e.what()).find("diverged"), std::string::npos) << e.what();
  }
  EXPECT_EQ(t.epochs_done(), 0);
}

TEST(Trainer, ANonFiniteStatisticAfterAFiniteEpochIsDivergenceToo) {
  // Training mode normalizes with the batch's statistics, so a NaN running variance
  // leaves the loss finite; the update keeps it NaN, and such a model must not be saved.
  const data::ImageDataset d = testing::synthetic_images(32, 4);
  TrainOptions o;
  o.model = "mlp-bn";
  o.batch_size = 32;
  Trainer t(o);
  std::string poisoned;
  for (const auto& b : t.model().state().buffers)
    if (b.name.ends_with("running_var")) {
      b.value[0] = std::numeric_limits<float>::quiet_NaN();
      poisoned = "model." + b.name;
      break;
    }
  ASSERT_FALSE(poisoned.empty());
  try {
    t.train_epoch(d, nullptr);
    FAIL() << "no TrainingDiverged";
  } catch (const TrainingDiverged& e) {
    EXPECT_EQ(e.batch, 0);  // found after the epoch's batches
    EXPECT_NE(std::string(e.what()).find(poisoned), std::string::npos) << e.what();
  }
  EXPECT_EQ(t.epochs_done(), 0);
}

}  // namespace
}  // namespace bnorm::nn
