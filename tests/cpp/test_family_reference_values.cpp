// The normalization family's oracles against known values: cases worked by hand, PyTorch
// 1.13's own numbers (float64; the generating snippet is beside each), RMSNorm against
// PyTorch 2.4's formula in numpy, and the float instantiation against the double one.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "reference/group_norm_reference.h"
#include "reference/layer_norm_reference.h"
#include "test_support.h"

namespace bnorm {
namespace {

using reference::Geometry;
using Vec = std::vector<double>;
constexpr double kTorchTolerance = 1e-13;  // float64 against float64, relative to max(1, |v|)

TEST(LayerNormReference, TwoByThreeWorkedByHand) {
  // Row 0 = (1, 2, 4): mean 7/3, deviations (-4, -1, 5) / 3, var = 42 / 27 = 14 / 9,
  //   rstd = 3 / sqrt(14), xhat = (-4, -1, 5) / sqrt(14).
  // Row 1 = (3, 3, 6): mean 4, deviations (-1, -1, 2), var = 6 / 3 = 2,
  //   rstd = 1 / sqrt(2), xhat = (-1, -1, 2) / sqrt(2).
  // y = xhat * weight + bias with weight (2, 1, 0.5), bias (0, 1, -1); eps = 0.
  const Vec x{1, 2, 4, 3, 3, 6}, w{2, 1, 0.5}, b{0, 1, -1};
  Vec y(6), mean(2), rstd(2);
  reference::layer_norm_forward(2, 3, x.data(), y.data(), w.data(), b.data(), 0.0, mean.data(),
                                rstd.data());
  const double r14 = std::sqrt(14.0), r2 = std::sqrt(2.0);
  const Vec expected{2 * -4 / r14, -1 / r14 + 1, 0.5 * 5 / r14 - 1,
                     2 * -1 / r2,  -1 / r2 + 1,  0.5 * 2 / r2 - 1};
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(y[i], expected[i], 1e-15) << i;
  EXPECT_NEAR(mean[0], 7.0 / 3, 1e-15);
  EXPECT_EQ(mean[1], 4.0);
  EXPECT_NEAR(rstd[0], 3 / r14, 1e-15);
  EXPECT_NEAR(rstd[1], 1 / r2, 1e-15);

  // dy = 1 everywhere: dbias = column sums = 2, dweight = column sums of xhat.
  const Vec dy(6, 1.0);
  Vec dw(3), db(3);
  reference::layer_norm_backward(2, 3, x.data(), dy.data(), w.data(), 0.0, (double*)nullptr,
                                 dw.data(), db.data());
  EXPECT_EQ(db, (Vec{2, 2, 2}));
  EXPECT_NEAR(dw[0], -4 / r14 - 1 / r2, 1e-15);
  EXPECT_NEAR(dw[1], -1 / r14 - 1 / r2, 1e-15);
  EXPECT_NEAR(dw[2], 5 / r14 + 2 / r2, 1e-15);
}

// /usr/bin/python3 (torch 1.13), torch.set_default_dtype(torch.float64):
//   x = torch.tensor(X).reshape(2, 5).requires_grad_(); w, b likewise
//   y = F.layer_norm(x, (5,), w, b, 1e-5); y.backward(DY)
//   _, mean, rstd = torch.native_layer_norm(x, (5,), w, b, 1e-5)
TEST(LayerNormReference, MatchesTorchLayerNorm) {
  const Vec x{0.5, -1.25, 3.0, 2.0, -0.75, 10.0, 10.5, 9.25, 11.0, 10.0};
  const Vec w{1.5, -0.5, 2.0, 1.0, 0.25}, b{0.1, 0.2, -0.3, 0.0, 1.0};
  const Vec dy{1.0, -2.0, 0.5, 0.25, 3.0, -1.0, 0.5, 2.0, -0.5, 1.5};
  Vec y(10), mean(2), rstd(2), dx(10), dw(5), db(5);
  reference::layer_norm_forward(2, 5, x.data(), y.data(), w.data(), b.data(), 1e-5, mean.data(),
                                rstd.data());
  reference::layer_norm_backward(2, 5, x.data(), dy.data(), w.data(), 1e-5, dx.data(), dw.data(),
                                 db.data());
  EXPECT_LE(test::max_relative_error(y, {-0.08659076316111883, 0.8064199802736363,
                                         2.5610583684704897, 0.8085599736981818,
                                         0.7745361611803148, -0.2858661421102796,
                                         -0.10011811053021652, -3.386929136882231,
                                         1.4577165368610525, 0.9356889763149534}),
            kTorchTolerance);
  EXPECT_LE(test::max_relative_error(mean, {0.7, 10.15}), kTorchTolerance);
  EXPECT_LE(test::max_relative_error(rstd, {0.6219692105370629, 1.714960631601239}),
            kTorchTolerance);
  EXPECT_LE(test::max_relative_error(dx, {0.36632425207559793, -0.004661502851031507,
                                          0.1410555748900637, -0.35970770424593235,
                                          -0.14301061986869784, -3.898050134118087,
                                          0.23482038300247154, 2.5504787482602183,
                                          1.7952499527211714, -0.6824989498657601}),
            kTorchTolerance);
  EXPECT_LE(test::max_relative_error(dw, {0.13285025263277384, 2.7257980316247616,
                                          -2.371664544764609, -0.5267182750059808,
                                          -3.0914322079465033}),
            kTorchTolerance);
  EXPECT_LE(test::max_relative_error(db, {0.0, -1.5, 2.5, -0.25, 4.5}), kTorchTolerance);
}

// The (2, 4, 3) problem shared by the GroupNorm and InstanceNorm comparisons.
const Vec kGroupX{0.5,  -1.0, 2.0,  1.5, 0.0,  -0.5, 3.0,  2.5,  4.0, -2.0, 1.0,  0.25,
                  1.0,  1.25, -3.0, 0.75, 2.0, 5.0,  -1.5, 0.5,  0.0, 2.25, -0.25, 1.75};
const Vec kGroupDy{1.0,  0.5, -1.0, 2.0, -0.5, 0.25, 1.5, -2.0, 0.75, 1.0,  0.0,  -1.25,
                   -0.5, 1.0, 2.0,  0.25, -1.5, 0.5, 1.0, 3.0,  -0.75, 0.5, -1.0, 2.5};
const Vec kGroupW{1.0, -2.0, 0.5, 1.5}, kGroupB{0.0, 0.5, -1.0, 2.0};

// y = F.group_norm(x, 2, w, b, 1e-5); y.backward(dy)
// _, mean, rstd = torch.native_group_norm(x, w, b, 2, 4, 3, 2, 1e-5)
TEST(GroupNormReference, MatchesTorchGroupNorm) {
  const Geometry g{2, 4, 3, false};
  Vec y(24), mean(4), rstd(4), dx(24), dw(4), db(4);
  reference::group_norm_forward(g, 2, kGroupX.data(), y.data(), kGroupW.data(), kGroupB.data(),
                                1e-5, mean.data(), rstd.data());
  reference::group_norm_backward(g, 2, kGroupX.data(), kGroupDy.data(), kGroupW.data(), 1e-5,
                                 dx.data(), dw.data(), db.data());
  EXPECT_LE(test::max_relative_error(y, {0.07881068817938452, -1.339781699049537,
      1.497403075408306, -1.5490778926639979, 1.2881068817938455, 2.2338351399464598,
      -0.6109361374761273, -0.7371190118081941, -0.35857038881199355, -0.6182946423903868,
      1.6529970955868163, 1.0851741610925156, -0.07111174872473475, 0.03555587436236732,
      -1.7777937181183678, 0.8555587436236736, -0.21111748724734714, -2.7711404413377965,
      -1.7811639460845383, -0.9833794905088397, -1.1828256044027643, 4.144045724359691,
      1.1523540159508203, 3.545707382677916}), kTorchTolerance);
  EXPECT_LE(test::max_relative_error(mean, {0.4166666666666667, 1.4583333333333333,
                                            1.1666666666666667, 0.45833333333333326}),
            kTorchTolerance);
  EXPECT_LE(test::max_relative_error(rstd, {0.9457282581526144, 0.5047314973282674,
                                            0.42667049234840826, 0.7977844555756987}),
            kTorchTolerance);
  EXPECT_LE(test::max_relative_error(dx, {1.49495485551482, -0.3524337027076596,
      0.9780227683557637, -2.3173368158174705, 1.0367800457994292, -0.8399871511448831,
      0.46083800616795856, -0.44230986684291373, 0.31129920004266703, 0.6407091023001151,
      0.002818372426140456, -0.9733548140939674, -0.5178301438501794, 0.15224744883798763,
      0.06769642037196605, -0.5479019980157341, 1.0958039960314683, -0.2500157233755084,
      0.862019077041383, 0.5587798385645185, -0.6618100921267757, -1.0029542354132484,
      -1.4216896428928663, 1.6656550548269884}), kTorchTolerance);
  EXPECT_LE(test::max_relative_error(dw, {-5.5729589242656905, 2.2693773725651316,
                                          -0.1105543770315633, 2.8727833061118564}),
            kTorchTolerance);
  EXPECT_LE(test::max_relative_error(db, {3.0, 1.0, 3.5, 1.75}), kTorchTolerance);
}

// PyTorch accepts a group of one value when N * C / G * spatial > 1 (F.group_norm of a
// (2, 3) input with G = 3 returns zeros): var = 0, so y = bias and dx = 0.
TEST(GroupNormReference, OneValuePerGroupGivesTheBias) {
  const Geometry g{2, 3, 1, false};
  const Vec x{0.3, -2.0, 5.0, 1.0, 1.5, -0.5}, w{2.0, -1.0, 0.5}, b{0.25, -0.75, 1.0};
  const Vec dy{1.0, 2.0, 3.0, -1.0, -2.0, 4.0};
  Vec y(6), dx(6);
  reference::group_norm_forward(g, 3, x.data(), y.data(), w.data(), b.data(), 1e-5,
                                (double*)nullptr, (double*)nullptr);
  reference::group_norm_backward(g, 3, x.data(), dy.data(), w.data(), 1e-5, dx.data(),
                                 (double*)nullptr, (double*)nullptr);
  EXPECT_EQ(y, (Vec{0.25, -0.75, 1.0, 0.25, -0.75, 1.0}));
  EXPECT_EQ(dx, Vec(6, 0.0));
}

// rm = [0.5, -1, 0, 2]; rv = [1, 2, 0.5, 1.5]  (updated in place by the first call)
// y = F.instance_norm(x, rm, rv, w, b, use_input_stats=True, momentum=0.1, eps=1e-5)
// y.backward(dy)                                          -> y, dx, rm, rv
// F.instance_norm(x, rm, rv, w, b, use_input_stats=False, momentum=0.1, eps=1e-5)
//   .backward(dy)                                         -> eval y, dx, dw, db
TEST(InstanceNormReference, MatchesTorchInstanceNormWithRunningStats) {
  const Geometry g{2, 4, 3, false};
  Vec y(24), dx(24), rm{0.5, -1.0, 0.0, 2.0}, rv{1.0, 2.0, 0.5, 1.5};
  reference::instance_norm_forward_training(g, kGroupX.data(), y.data(), kGroupW.data(),
                                            kGroupB.data(), 1e-5, (double*)nullptr,
                                            (double*)nullptr);
  reference::instance_norm_update_running_stats(g, kGroupX.data(), 0.1, rm.data(), rv.data());
  reference::instance_norm_backward(g, kGroupX.data(), kGroupDy.data(), kGroupW.data(), 1e-5,
                                    dx.data(), (double*)nullptr, (double*)nullptr);
  EXPECT_LE(test::max_relative_error(y, {0.0, -1.2247407889290967, 1.2247407889290967,
      -2.245606883952715, 1.2844591097007756, 2.4611477742519394, -1.1336289028813626,
      -1.5345156115254506, -0.33185548559318656, -0.05921308292042449, 3.4708664878003033,
      2.5883465951201217, 0.6419398922527839, 0.7703278707033406, -1.4122677629561244,
      2.5559817473618867, 1.1541760105242367, -2.2101577578861233, -1.6864017209881788,
      -0.5097130564370151, -0.8038852225748061, 3.3887241979964466, -0.08308629699466996,
      2.6943620989982233}), kTorchTolerance);
  EXPECT_LE(test::max_relative_error(rm, {0.4625, -0.7541666666666667, 0.14166666666666666,
                                          1.85}),
            kTorchTolerance);
  EXPECT_LE(test::max_relative_error(rv, {1.296875, 2.0927083333333334, 0.5333333333333333,
                                          1.5593750000000002}),
            kTorchTolerance);
  EXPECT_LE(test::max_relative_error(dx, {0.6804115494050538, -0.34020169226044655,
      -0.34020985714460716, -0.4299841438993103, 1.7197872287192397, -1.2898030848199282,
      1.3315115365885526, -0.887697837629154, -0.4438136989593992, 0.2715507559028265,
      0.814629337418189, -1.0861800933210157, -0.4237280458226958, 0.398801392730033,
      0.024926653092662582, -0.9108665569326354, 1.290396198865694, -0.3795296419330587,
      0.29416741419167264, 0.8825198926606002, -1.1766873068522727, -1.520972592408456,
      -0.3802624908805047, 1.901235083288961}), kTorchTolerance);

  Vec dw(4), db(4);
  reference::instance_norm_forward_inference(g, kGroupX.data(), y.data(), kGroupW.data(),
                                             kGroupB.data(), rm.data(), rv.data(), 1e-5);
  reference::instance_norm_backward_inference(g, kGroupX.data(), kGroupDy.data(),
                                              kGroupW.data(), rm.data(), rv.data(), 1e-5,
                                              dx.data(), dw.data(), db.data());
  EXPECT_LE(test::max_relative_error(y, {0.03292915104138877, -1.2842368906141628,
      1.3500951926969402, -2.6164533444072258, -0.5426581429532493, 0.1486069241980762,
      0.9569487081113591, 0.6146253189373605, 1.6415954864593565, -2.624612113178428,
      0.9789817412463211, 0.07808327764013387, 0.47198449825990596, 0.6915121718691646,
      -3.0404582794882318, -1.5795557436802377, -3.307718411558551, -7.4553088144665045,
      -2.123961794454629, -0.7546682377586342, -1.096991626932633, 2.4804791805899664,
      -0.5225156980973242, 1.8798802048525083}), kTorchTolerance);
  EXPECT_LE(test::max_relative_error(dx, {0.8781106944370344, 0.4390553472185172,
      -0.8781106944370344, -2.765060268605302, 0.6912650671513255, -0.34563253357566276,
      1.026970167521996, -1.3692935566959947, 0.513485083760998, 1.2011979514749163, 0.0,
      -1.5014974393436455, -0.4390553472185172, 0.8781106944370344, 1.7562213888740688,
      -0.34563253357566276, 2.0737952014539767, -0.6912650671513255, 0.6846467783479974,
      2.053940335043992, -0.513485083760998, 0.6005989757374581, -1.2011979514749163,
      3.002994878687291}), kTorchTolerance);
  EXPECT_LE(test::max_relative_error(dw, {-7.584681123199885, 2.2926958060518965,
                                          2.7442925032115553, 0.16015972686332192}),
            kTorchTolerance);
  EXPECT_LE(test::max_relative_error(db, {3.0, 1.0, 3.5, 1.75}), kTorchTolerance);
}

// N = 2, C = 1, spatial = 3, momentum 0.1, running (mean, var) = (0, 1):
//   instance 0 = (1, 2, 3): mean 2, unbiased var (1 + 0 + 1) / 2 = 1;
//   instance 1 = (2, 4, 9): mean 5, unbiased var (9 + 1 + 16) / 2 = 13.
//   running_mean = 0.9 * 0 + 0.1 * (2 + 5) / 2 = 0.35,
//   running_var  = 0.9 * 1 + 0.1 * (1 + 13) / 2 = 1.6.
// (BatchNorm's unbiased variance of all six values would be 41.5 / 5 = 8.3, giving 1.73.)
// torch 1.13 agrees: F.instance_norm(x, rm, rv, momentum=0.1) leaves rm = 0.35, rv = 1.6.
TEST(InstanceNormReference, RunningStatsWorkedExample) {
  for (bool channels_last : {false, true}) {
    const Geometry g{2, 1, 3, channels_last};
    const Vec x{1, 2, 3, 2, 4, 9};
    Vec rm{0.0}, rv{1.0};
    reference::instance_norm_update_running_stats(g, x.data(), 0.1, rm.data(), rv.data());
    EXPECT_NEAR(rm[0], 0.35, 1e-16);
    EXPECT_NEAR(rv[0], 1.6, 1e-15);
    // Either buffer may be absent.
    Vec only_var{1.0};
    reference::instance_norm_update_running_stats(g, x.data(), 0.1, (double*)nullptr,
                                                  only_var.data());
    EXPECT_EQ(only_var[0], rv[0]);
  }
  // Two channels, channels-last: each channel's instances are found through the layout.
  const Geometry g{2, 2, 3, true};
  const Vec x{1, 10, 2, 10, 3, 10, 2, 20, 4, 20, 9, 20};  // channel 1 constant per instance
  Vec rm{0.0, 0.0}, rv{1.0, 1.0};
  reference::instance_norm_update_running_stats(g, x.data(), 0.1, rm.data(), rv.data());
  EXPECT_NEAR(rm[0], 0.35, 1e-16);
  EXPECT_NEAR(rv[0], 1.6, 1e-15);
  EXPECT_NEAR(rm[1], 1.5, 1e-15);
  EXPECT_NEAR(rv[1], 0.9, 1e-15);
}

// RMSNorm is not in torch 1.13; PyTorch 2.4's formula in numpy, float64, eps=None:
//   eps = np.finfo(np.float64).eps
//   rstd = 1 / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps); y = x * rstd * w
TEST(RmsNormReference, MatchesTheFormulaOfTorch24) {
  const Vec x{0.5, -1.25, 3.0, 2.0, -0.75, 10.0, 10.5, 9.25, 11.0, 10.0};
  const Vec w{1.5, -0.5, 2.0, 1.0, 0.25};
  Vec y(10), rstd(2);
  reference::rms_norm_forward(2, 5, x.data(), y.data(), w.data(),
                              reference::rms_norm_default_eps<double>(), rstd.data());
  EXPECT_LE(test::max_relative_error(y, {0.42769946138415077, 0.35641621782012567,
                                         3.421595691073206, 1.140531897024402,
                                         -0.10692486534603769, 1.4753999234414998,
                                         -0.516389973204525, 1.81965990557785, 1.0819599438571,
                                         0.24589998724024997}),
            kTorchTolerance);
  EXPECT_LE(test::max_relative_error(rstd, {0.570265948512201, 0.09835999489609999}),
            kTorchTolerance);
}

TEST(RmsNormReference, DefaultEpsIsTheMachineEpsilon) {
  // torch.finfo(torch.float32).eps, torch.finfo(torch.float64).eps
  EXPECT_EQ(reference::rms_norm_default_eps<float>(), 1.1920928955078125e-07);
  EXPECT_EQ(reference::rms_norm_default_eps<double>(), 2.220446049250313e-16);
  // A zero row: y = 0 * (1 / sqrt(eps)) = 0, not NaN.
  const Vec x(4, 0.0);
  Vec y(4, 1.0), rstd(1);
  reference::rms_norm_forward(1, 4, x.data(), y.data(), (const double*)nullptr,
                              reference::rms_norm_default_eps<double>(), rstd.data());
  EXPECT_EQ(y, Vec(4, 0.0));
  EXPECT_EQ(rstd[0], 1 / std::sqrt(2.220446049250313e-16));
}

// The float instantiation is the double computation rounded once to float: on the same
// (float) inputs, within one float ulp of the double result, even at |mean| = 1e6 * std,
// where a float accumulation would lose every digit.
TEST(FamilyReference, FloatIsDoubleRoundedOnceAtLargeMeans) {
  const double tolerance = 2.5e-7;  // about 2 ulp of float at |y| ~ 1
  for (double offset : {0.0, 1e4, 1e6}) {
    SCOPED_TRACE(offset);
    const int64_t n = 3, c = 6, s = 35, size = n * c * s;
    const auto xf = test::random_values<float>(size, 500, offset, 1.0);
    const auto dyf = test::random_values<float>(size, 501);
    const auto wf = test::random_values<float>(c * s, 502, 1.0, 0.5);
    const auto bf = test::random_values<float>(c * s, 503);
    const Vec xd = test::to_double(xf), dyd = test::to_double(dyf), wd = test::to_double(wf),
              bd = test::to_double(bf);
    std::vector<float> yf(size), dxf(size), dwf(c * s), dbf(c * s);
    Vec yd(size), dxd(size), dwd(c * s), dbd(c * s);
    const auto compare = [&](const char* what, size_t channels) {
      SCOPED_TRACE(what);
      EXPECT_LE(test::max_relative_error(yf, yd), tolerance);
      EXPECT_LE(test::max_relative_error(dxf, dxd), tolerance);
      EXPECT_LE(test::max_relative_error(std::vector<float>(dwf.begin(), dwf.begin() + channels),
                                         Vec(dwd.begin(), dwd.begin() + channels)),
                tolerance);
    };
    // LayerNorm and RMSNorm over rows of c * s.
    reference::layer_norm_forward(n, c * s, xf.data(), yf.data(), wf.data(), bf.data(), 1e-5,
                                  (float*)nullptr, (float*)nullptr);
    reference::layer_norm_forward(n, c * s, xd.data(), yd.data(), wd.data(), bd.data(), 1e-5,
                                  (double*)nullptr, (double*)nullptr);
    reference::layer_norm_backward(n, c * s, xf.data(), dyf.data(), wf.data(), 1e-5, dxf.data(),
                                   dwf.data(), dbf.data());
    reference::layer_norm_backward(n, c * s, xd.data(), dyd.data(), wd.data(), 1e-5, dxd.data(),
                                   dwd.data(), dbd.data());
    compare("layer_norm", c * s);
    reference::rms_norm_forward(n, c * s, xf.data(), yf.data(), wf.data(), 1e-5, (float*)nullptr);
    reference::rms_norm_forward(n, c * s, xd.data(), yd.data(), wd.data(), 1e-5, (double*)nullptr);
    reference::rms_norm_backward(n, c * s, xf.data(), dyf.data(), wf.data(), 1e-5, dxf.data(),
                                 dwf.data());
    reference::rms_norm_backward(n, c * s, xd.data(), dyd.data(), wd.data(), 1e-5, dxd.data(),
                                 dwd.data());
    compare("rms_norm", c * s);
    // GroupNorm (G = 2) in both layouts; weight and bias are the first c values.
    for (bool last : {false, true}) {
      const Geometry g{n, c, s, last};
      reference::group_norm_forward(g, 2, xf.data(), yf.data(), wf.data(), bf.data(), 1e-5,
                                    (float*)nullptr, (float*)nullptr);
      reference::group_norm_forward(g, 2, xd.data(), yd.data(), wd.data(), bd.data(), 1e-5,
                                    (double*)nullptr, (double*)nullptr);
      reference::group_norm_backward(g, 2, xf.data(), dyf.data(), wf.data(), 1e-5, dxf.data(),
                                     dwf.data(), dbf.data());
      reference::group_norm_backward(g, 2, xd.data(), dyd.data(), wd.data(), 1e-5, dxd.data(),
                                     dwd.data(), dbd.data());
      compare(last ? "group_norm channels-last" : "group_norm channels-first", c);
    }
    // InstanceNorm's running statistics (float buffers, double momentum).
    std::vector<float> rmf(c, 0.5f), rvf(c, 2.0f);
    Vec rmd(c, 0.5), rvd(c, 2.0);
    const Geometry g{n, c, s, true};
    reference::instance_norm_update_running_stats(g, xf.data(), 0.1, rmf.data(), rvf.data());
    reference::instance_norm_update_running_stats(g, xd.data(), 0.1, rmd.data(), rvd.data());
    EXPECT_LE(test::max_relative_error(rmf, rmd), tolerance);
    EXPECT_LE(test::max_relative_error(rvf, rvd), tolerance);
  }
}

}  // namespace
}  // namespace bnorm
