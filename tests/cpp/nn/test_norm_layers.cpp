// The family's engine layers (nn/norm_layers.h) and the models that use them: gradients
// by finite differences in float64 through each layer and each whole model, state names
// as PyTorch's, shape errors naming the layer.
#include <gtest/gtest.h>

#include <string>

#include "gradcheck.h"
#include "nn/models.h"
#include "nn/norm_layers.h"

namespace bnorm::nn {
namespace {

using namespace bnorm::nn::testing;

// Random weights and biases, so that a swapped weight/bias gradient shows.
void randomize(Layer<double>& layer, uint64_t seed) {
  StateLists<double> s;
  layer.collect_state(s, "");
  Rng rng(seed);
  for (auto& p : s.parameters)
    for (double& v : p.value) v = rng.uniform(-1.0, 1.0) + 0.5;
}

TEST(LayerNormFamily, GradientsMatchFiniteDifferences) {
  uint64_t seed = 300;
  struct Case {
    NormLayer<double> layer;
    Shape input;
  };
  Case cases[] = {
      {NormLayer<double>(LayerNorm<double>({4, 5})), Shape{3, 2, 4, 5}},
      {NormLayer<double>(LayerNorm<double>({7})), Shape{5, 7}},
      {NormLayer<double>(RMSNorm<double>({6})), Shape{4, 6}},
      {NormLayer<double>(GroupNorm<double>(2, 6)), Shape{3, 6, 4, 2}},
      {NormLayer<double>(GroupNorm<double>(3, 6)), Shape{4, 6}},
      {NormLayer<double>(InstanceNorm<double>(3, {1e-5, 0.1, true, false})), Shape{2, 3, 4, 5}},
      {NormLayer<double>(InstanceNorm<double>(3, {1e-5, 0.1, true, true})), Shape{2, 3, 4, 5}},
  };
  for (Case& c : cases) {
    randomize(c.layer, seed++);
    Rng rng(seed++);
    Tensor<double> x = random_tensor(c.input, rng, -2.0, 2.0);
    EXPECT_TRUE(check_layer_gradients(c.layer, x)) << c.layer.describe() << " on " << c.input.str();
    c.layer.set_training(false);
    EXPECT_TRUE(check_layer_gradients(c.layer, x))
        << c.layer.describe() << " eval on " << c.input.str();
  }
}

TEST(LayerNormFamily, DescribeStateAndShapeErrors) {
  NormLayer<float> ln(LayerNorm<float>({16, 8, 8}));
  EXPECT_EQ(ln.describe(), "LayerNorm((16, 8, 8))");
  StateLists<float> s;
  ln.collect_state(s, "5.");
  ASSERT_EQ(s.parameters.size(), 2u);
  EXPECT_EQ(s.parameters[0].name, "5.weight");
  EXPECT_EQ(s.parameters[0].shape.str(), "(16, 8, 8)");
  EXPECT_EQ(s.parameters[1].name, "5.bias");
  try {
    ln.output_shape(Shape{2, 16, 4, 4});
    ADD_FAILURE() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("LayerNorm((16, 8, 8)): expected input (N, 16, 8, 8)"),
              std::string::npos)
        << e.what();
  }
  NormLayer<float> in(InstanceNorm<float>(6, {1e-5, 0.1, true, true}));
  EXPECT_EQ(in.describe(), "InstanceNorm2d(6, affine=True)");
  StateLists<float> t;
  in.collect_state(t, "1.");
  EXPECT_EQ(t.parameters.size(), 2u);
  ASSERT_EQ(t.buffers.size(), 2u);
  EXPECT_EQ(t.buffers[1].name, "1.running_var");
  EXPECT_THROW(in.output_shape(Shape{2, 6}), std::invalid_argument);
  NormLayer<float> gn(GroupNorm<float>(4, 84));
  EXPECT_EQ(gn.describe(), "GroupNorm(4, 84)");
  EXPECT_EQ(gn.output_shape(Shape{3, 84}).str(), "(3, 84)");
}

void expect_model_gradients(const std::string& name, uint64_t seed) {
  auto model = make_model<double>(name, seed);
  StateLists<double> s = model->state();
  Rng rng(seed + 1);
  for (auto& p : s.parameters)  // away from the initial weight 1, bias 0 of the norms
    for (double& v : p.value) v += rng.uniform(-0.1, 0.1);
  Rng data(seed + 2);
  const Tensor<double> x = random_tensor(Shape{3, 1, 28, 28}, data, 0.0, 1.0);
  GradcheckOptions o;
  o.seed = seed + 3;
  EXPECT_TRUE(check_model_gradients(*model, x, 40, o)) << name;
}

TEST(LayerModels, NormalizedLenetsAndMlpGradientsMatchFiniteDifferences) {
  expect_model_gradients("lenet-ln", 400);
  expect_model_gradients("lenet-gn", 410);
  expect_model_gradients("lenet-in", 420);
  expect_model_gradients("mlp-ln", 430);
}

}  // namespace
}  // namespace bnorm::nn
