// Batch norm folded out of engine models (deploy::fold_batch_norms): every named model
// with batch norm computes the same logits folded as unfolded in eval mode (float and
// double), the report names what folded, no BatchNorm layer is left; a batch norm that
// cannot fold becomes a ChannelAffine with the same output; refusals change nothing.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "deploy/model_folding.h"
#include "deploy_test_support.h"
#include "nn/activations.h"
#include "nn/batch_norm_layer.h"
#include "nn/channel_affine.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/models.h"
#include "nn/pooling.h"
#include "nn/reshape.h"

namespace bnorm::deploy {
namespace {

using namespace bnorm::deploy::testing;

// The report line fold_batch_norms writes for batch norm `bn` folded into `target`
// (indices of the model before folding).
std::string folded_line(size_t bn_index, const std::string& bn, size_t target_index,
                        const std::string& target) {
  return std::to_string(bn_index) + "." + bn + " into " + std::to_string(target_index) + "." +
         target;
}

// For one named model: the eval-mode logits of the unfolded model and of a folded copy,
// and what the fold reported. Checks the structure on the way.
template <class T>
void check_named_model(const std::string& name, double tolerance) {
  SCOPED_TRACE(name);
  auto model = nn::make_model<T>(name, 7);
  // A few training steps give the running statistics realistic values; random ones on
  // top make every statistic and parameter matter.
  for (uint64_t step = 0; step < 2; ++step)
    model->forward(random_tensor<T>(nn::Shape{4, 1, 28, 28}, 100 + step));
  const int bn_count = randomize_batch_norms(*model, 11);
  ASSERT_GT(bn_count, 0);
  model->set_training(false);
  const nn::Tensor<T> x = random_tensor<T>(nn::Shape{5, 1, 28, 28}, 12);
  const nn::Tensor<T> unfolded = model->forward(x);

  // What folding should report: each batch norm right after a conv or linear layer.
  std::vector<std::string> expected;
  for (size_t i = 1; i < model->size(); ++i)
    if (dynamic_cast<nn::BatchNormLayer<T>*>(&model->layer(i)))
      expected.push_back(folded_line(i, model->layer(i).describe(), i - 1,
                                     model->layer(i - 1).describe()));

  auto folded = nn::make_model<T>(name, 8);  // other initial values, all overwritten
  folded->copy_state_from(*model);
  folded->set_training(false);
  ASSERT_EQ(max_relative_difference(folded->forward(x).values(), unfolded.values()), 0.0)
      << "the copy differs before folding";
  const size_t layers_before = folded->size();
  const FoldReport report = fold_batch_norms(*folded);

  EXPECT_EQ(report.folded, expected);
  EXPECT_TRUE(report.kept_as_affine.empty());
  EXPECT_EQ(folded->size(), layers_before - static_cast<size_t>(bn_count));
  EXPECT_EQ((count_layers<nn::BatchNormLayer<T>>(*folded)), 0);
  EXPECT_EQ((count_layers<nn::ChannelAffine<T>>(*folded)), 0);
  EXPECT_FALSE(folded->is_training());
  EXPECT_NE(report.summary().find("folded " + std::to_string(bn_count) + " batch norm layers:"),
            std::string::npos)
      << report.summary();
  for (const std::string& line : expected)
    EXPECT_NE(report.summary().find(line), std::string::npos) << report.summary();

  const nn::Tensor<T> out = folded->forward(x);
  ASSERT_EQ(out.shape(), (nn::Shape{5, 10}));
  const double err = max_relative_difference(out.values(), unfolded.values());
  EXPECT_LE(err, tolerance) << "folded vs unfolded logits";
  // The state names follow the new indices, so a second fold finds nothing.
  EXPECT_EQ(fold_batch_norms(*folded).summary(), "no batch norm to fold\n");
}

TEST(ModelFolding, TheNamedModelsWithBatchNormAreTheOnesExpected) {
  std::vector<std::string> with_bn;
  for (const std::string& name : nn::model_names()) {
    auto model = nn::make_model<float>(name, 1);
    if (count_layers<nn::BatchNormLayer<float>>(*model) > 0) with_bn.push_back(name);
  }
  EXPECT_EQ(with_bn, (std::vector<std::string>{"lenet-bn", "mlp-bn", "vgg-bn"}));
}

TEST(ModelFolding, LeNetBnFoldsWithTheSameLogits) {
  check_named_model<float>("lenet-bn", 1e-5);
  check_named_model<double>("lenet-bn", 1e-12);
}

TEST(ModelFolding, MlpBnFoldsWithTheSameLogits) {
  check_named_model<float>("mlp-bn", 1e-5);
  check_named_model<double>("mlp-bn", 1e-12);
}

TEST(ModelFolding, VggBnFoldsWithTheSameLogits) {
  check_named_model<float>("vgg-bn", 1e-5);
  check_named_model<double>("vgg-bn", 1e-12);
}

TEST(ModelFolding, LeNetBnReportNamesEveryLayer) {
  auto model = nn::make_model<float>("lenet-bn", 3);
  model->set_training(false);
  const FoldReport r = fold_batch_norms(*model);
  EXPECT_EQ(r.folded, (std::vector<std::string>{
                          "1.BatchNorm2d(6) into 0.Conv2d(1, 6, kernel_size=5)",
                          "5.BatchNorm2d(16) into 4.Conv2d(6, 16, kernel_size=5)",
                          "10.BatchNorm1d(120) into 9.Linear(256, 120)",
                          "13.BatchNorm1d(84) into 12.Linear(120, 84)"}));
  EXPECT_EQ(model->size(), 12u);
}

// A batch norm after a pooling layer (and one on the input) cannot fold: it becomes a
// ChannelAffine computing the same map. A conv and a linear layer without bias get one.
TEST(ModelFolding, BatchNormAfterPoolingIsKeptAsChannelAffine) {
  auto build = [] {
    auto m = std::make_unique<nn::Sequential<float>>();
    m->emplace<nn::BatchNormLayer<float>>(1, 2);                                 // 0: kept
    m->emplace<nn::Conv2d<float>>(nn::Conv2dOptions{1, 3, 3, 1, 0, false});      // 1
    m->emplace<nn::BatchNormLayer<float>>(3, 2);                                 // 2: folds
    m->emplace<nn::Elementwise<float>>(nn::Activation::tanh);                    // 3
    m->emplace<nn::AvgPool2d<float>>(2);                                         // 4
    m->emplace<nn::BatchNormLayer<float>>(3, 2);                                 // 5: kept
    m->emplace<nn::MaxPool2d<float>>(2);                                         // 6
    m->emplace<nn::BatchNormLayer<float>>(3, 2);                                 // 7: kept
    m->emplace<nn::Flatten<float>>();                                            // 8
    m->emplace<nn::Linear<float>>(3 * 6 * 6, 4, false);                          // 9
    m->emplace<nn::BatchNormLayer<float>>(4, 0);                                 // 10: folds
    return m;
  };
  auto model = build();
  // Random weights (the layers start from their own defaults).
  {
    nn::StateLists<float> s = model->state();
    nn::Rng rng(21);
    for (auto& p : s.parameters)
      for (float& v : p.value) v = static_cast<float>(rng.uniform(-0.5, 0.5));
  }
  ASSERT_EQ(randomize_batch_norms(*model, 22), 5);
  model->set_training(false);
  const nn::Tensor<float> x = random_tensor<float>(nn::Shape{5, 1, 28, 28}, 23);
  const nn::Tensor<float> unfolded = model->forward(x);

  auto folded = build();
  folded->copy_state_from(*model);
  folded->set_training(false);
  const FoldReport r = fold_batch_norms(*folded);
  EXPECT_EQ(r.folded, (std::vector<std::string>{
                          "2.BatchNorm2d(3) into 1.Conv2d(1, 3, kernel_size=3, bias=False)",
                          "10.BatchNorm1d(4) into 9.Linear(108, 4, bias=False)"}));
  EXPECT_EQ(r.kept_as_affine,
            (std::vector<std::string>{
                "0.BatchNorm2d(1) after the input: kept as 0.ChannelAffine(1)",
                "5.BatchNorm2d(3) after 4.AvgPool2d(kernel_size=2): kept as 4.ChannelAffine(3)",
                "7.BatchNorm2d(3) after 6.MaxPool2d(kernel_size=2): kept as 6.ChannelAffine(3)"}));
  EXPECT_NE(r.summary().find("could not fold 3"), std::string::npos) << r.summary();
  EXPECT_EQ(layer_descriptions(*folded),
            (std::vector<std::string>{"ChannelAffine(1)", "Conv2d(1, 3, kernel_size=3)",
                                      "Tanh()", "AvgPool2d(kernel_size=2)", "ChannelAffine(3)",
                                      "MaxPool2d(kernel_size=2)", "ChannelAffine(3)", "Flatten()",
                                      "Linear(108, 4)"}))
      << folded->describe();
  EXPECT_EQ((count_layers<nn::BatchNormLayer<float>>(*folded)), 0);

  // Each ChannelAffine is y = x * s + (beta - mean * s), s = gamma / sqrt(var + eps).
  {
    auto* bn = dynamic_cast<nn::BatchNormLayer<float>*>(&model->layer(5));
    auto* affine = dynamic_cast<nn::ChannelAffine<float>*>(&folded->layer(4));
    ASSERT_TRUE(bn && affine);
    const BatchNorm<float>& m = bn->module();
    for (size_t c = 0; c < 3; ++c) {
      const double s = static_cast<double>(m.weight()[c]) /
                       std::sqrt(static_cast<double>(m.running_var()[c]) + m.options().eps);
      const double shift =
          static_cast<double>(m.bias()[c]) - static_cast<double>(m.running_mean()[c]) * s;
      EXPECT_NEAR(affine->scale()[c], s, 1e-6 * std::fabs(s)) << c;
      EXPECT_NEAR(affine->shift()[c], shift, 1e-6 * (std::fabs(shift) + 1)) << c;
    }
  }
  const nn::Tensor<float> out = folded->forward(x);
  ASSERT_EQ(out.shape(), (nn::Shape{5, 4}));
  EXPECT_LE(max_relative_difference(out.values(), unfolded.values()), 1e-6);
}

// Batch norm without affine parameters (gamma 1, beta 0) and with its own eps: the fold
// must use the layer's eps, not the default.
TEST(ModelFolding, NonAffineBatchNormWithItsOwnEps) {
  BatchNormOptions o;
  o.affine = false;
  o.eps = 0.1;
  auto build = [&o] {
    auto m = std::make_unique<nn::Sequential<double>>();
    m->emplace<nn::Conv2d<double>>(nn::Conv2dOptions{1, 4, 5, 1, 2, true});
    m->emplace<nn::BatchNormLayer<double>>(4, 2, o);  // folds
    m->emplace<nn::Elementwise<double>>(nn::Activation::relu);
    m->emplace<nn::AvgPool2d<double>>(4);
    m->emplace<nn::BatchNormLayer<double>>(4, 2, o);  // kept as ChannelAffine
    m->emplace<nn::Flatten<double>>();
    m->emplace<nn::Linear<double>>(4 * 7 * 7, 10);
    return m;
  };
  auto model = build();
  {
    nn::StateLists<double> s = model->state();
    nn::Rng rng(31);
    for (auto& p : s.parameters)
      for (double& v : p.value) v = rng.uniform(-0.5, 0.5);
  }
  ASSERT_EQ(randomize_batch_norms(*model, 32), 2);
  // Small variances, so that eps = 0.1 weighs.
  for (size_t i : {size_t{1}, size_t{4}})
    for (double& v : dynamic_cast<nn::BatchNormLayer<double>&>(model->layer(i)).module().running_var())
      v *= 0.05;
  model->set_training(false);
  const nn::Tensor<double> x = random_tensor<double>(nn::Shape{5, 1, 28, 28}, 33);
  const nn::Tensor<double> unfolded = model->forward(x);
  auto folded = build();
  folded->copy_state_from(*model);
  folded->set_training(false);
  const FoldReport r = fold_batch_norms(*folded);
  EXPECT_EQ(r.folded.size(), 1u);
  EXPECT_EQ(r.kept_as_affine.size(), 1u);
  EXPECT_LE(max_relative_difference(folded->forward(x).values(), unfolded.values()), 1e-12);
}

// Two batch norms in a row after a conv: both fold into it, one after the other (the
// second sees the conv that already holds the first), and the report names each with
// the indices of the model before folding.
TEST(ModelFolding, TwoBatchNormsInARowBothFoldIntoTheConv) {
  auto build = [] {
    auto m = std::make_unique<nn::Sequential<double>>();
    m->emplace<nn::Conv2d<double>>(nn::Conv2dOptions{1, 3, 5, 1, 0, true});  // 0
    m->emplace<nn::BatchNormLayer<double>>(3, 2);                           // 1: folds into 0
    m->emplace<nn::BatchNormLayer<double>>(3, 2);                           // 2: folds into 0
    m->emplace<nn::Elementwise<double>>(nn::Activation::sigmoid);           // 3
    m->emplace<nn::Flatten<double>>();                                      // 4
    m->emplace<nn::Linear<double>>(3 * 24 * 24, 10);                        // 5
    return m;
  };
  auto model = build();
  {
    nn::StateLists<double> s = model->state();
    nn::Rng rng(51);
    for (auto& p : s.parameters)
      for (double& v : p.value) v = rng.uniform(-0.3, 0.3);
  }
  randomize_batch_norms(*model, 52);
  model->set_training(false);
  const nn::Tensor<double> x = random_tensor<double>(nn::Shape{3, 1, 28, 28}, 53);
  const nn::Tensor<double> unfolded = model->forward(x);
  auto folded = build();
  folded->copy_state_from(*model);
  folded->set_training(false);
  const FoldReport r = fold_batch_norms(*folded);
  EXPECT_EQ(folded->size(), 4u);
  EXPECT_EQ((count_layers<nn::BatchNormLayer<double>>(*folded)), 0);
  EXPECT_LE(max_relative_difference(folded->forward(x).values(), unfolded.values()), 1e-12);
  EXPECT_TRUE(r.kept_as_affine.empty());
  // The report speaks of the model before folding: both fold into layer 0 (the second
  // once named layer 1, the first batch norm, just folded and erased).
  ASSERT_EQ(r.folded.size(), 2u);
  EXPECT_EQ(r.folded, (std::vector<std::string>{
                          "1.BatchNorm2d(3) into 0.Conv2d(1, 3, kernel_size=5)",
                          "2.BatchNorm2d(3) into 0.Conv2d(1, 3, kernel_size=5)"}));
}

TEST(ModelFolding, TrainingModeIsRefusedAndNothingChanges) {
  auto model = nn::make_model<float>("lenet-bn", 4);
  randomize_batch_norms(*model, 5);
  ASSERT_TRUE(model->is_training());
  const auto layers = layer_descriptions(*model);
  const auto state = state_values(*model);
  try {
    fold_batch_norms(*model);
    ADD_FAILURE() << "a training-mode model was folded";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("training mode"), std::string::npos) << e.what();
  }
  EXPECT_EQ(layer_descriptions(*model), layers);
  EXPECT_EQ(state_values(*model), state);
  EXPECT_TRUE(model->is_training());
}

// A model is folded whole or not at all: a bad batch norm late in the model stops the
// fold before the good ones earlier are touched.
TEST(ModelFolding, ALateBadBatchNormLeavesTheWholeModelUnchanged) {
  {
    auto model = nn::make_model<float>("lenet-bn", 6);
    randomize_batch_norms(*model, 7);
    model->set_training(false);
    auto* last_bn = dynamic_cast<nn::BatchNormLayer<float>*>(&model->layer(13));
    ASSERT_NE(last_bn, nullptr) << model->describe();
    last_bn->module().running_var()[5] = -1.f;
    const auto layers = layer_descriptions(*model);
    const auto state = state_values(*model);
    try {
      fold_batch_norms(*model);
      ADD_FAILURE() << "a negative running_var was folded";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("layer 13"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("running_var[5]"), std::string::npos) << e.what();
    }
    EXPECT_EQ(layer_descriptions(*model), layers);
    EXPECT_EQ(state_values(*model), state);
  }
  {
    nn::Sequential<float> model;
    model.emplace<nn::Conv2d<float>>(nn::Conv2dOptions{1, 2, 3, 1, 0, true});
    model.emplace<nn::BatchNormLayer<float>>(2, 2);
    model.emplace<nn::Conv2d<float>>(nn::Conv2dOptions{2, 2, 3, 1, 0, true});
    BatchNormOptions no_stats;
    no_stats.track_running_stats = false;
    model.emplace<nn::BatchNormLayer<float>>(2, 2, no_stats);
    model.set_training(false);
    const auto layers = layer_descriptions(model);
    const auto state = state_values(model);
    try {
      fold_batch_norms(model);
      ADD_FAILURE() << "a batch norm without running statistics was folded";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("layer 3"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("running statistics"), std::string::npos) << e.what();
    }
    EXPECT_EQ(layer_descriptions(model), layers);
    EXPECT_EQ(state_values(model), state);
  }
}

TEST(ModelFolding, AModelWithoutBatchNormReportsNothing) {
  auto model = nn::make_model<float>("lenet", 9);
  model->set_training(false);
  const nn::Tensor<float> x = random_tensor<float>(nn::Shape{5, 1, 28, 28}, 10);
  const nn::Tensor<float> before = model->forward(x);
  const auto layers = layer_descriptions(*model);
  const FoldReport r = fold_batch_norms(*model);
  EXPECT_TRUE(r.folded.empty());
  EXPECT_TRUE(r.kept_as_affine.empty());
  EXPECT_EQ(r.summary(), "no batch norm to fold\n");
  EXPECT_EQ(layer_descriptions(*model), layers);
  EXPECT_EQ(max_relative_difference(model->forward(x).values(), before.values()),
            0.0);
}

}  // namespace
}  // namespace bnorm::deploy
