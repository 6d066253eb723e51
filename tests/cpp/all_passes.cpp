#include "all_passes.h"

#include <algorithm>

namespace bnorm::test {

template <class T>
AllPassOutputs<T> run_all_passes(const Shape& s, int64_t offset) {
  const int64_t count = s.size();
  const std::vector<T> x = random_values<T>(count, 7, 3.0);
  const std::vector<T> dy = random_values<T>(count, 8);
  const std::vector<T> weight = random_values<T>(s.c, 9), bias = random_values<T>(s.c, 10);
  std::vector<T> rm(s.c, T(0.5)), rv(s.c, T(2));
  std::vector<T> buffer(static_cast<size_t>(count + offset));
  T* out = buffer.data() + offset;
  AllPassOutputs<T> o;
  o.mean.assign(s.c, 0), o.invstd.assign(s.c, 0), o.dweight.assign(s.c, 0),
      o.dbias.assign(s.c, 0), o.dweight_relu.assign(s.c, 0);
  o.running_mean.assign(s.c, T(0.5)), o.running_var.assign(s.c, T(2));
  const bnorm_layout L = s.layout();
  o.mask.assign(static_cast<size_t>(bnorm_relu_mask_bytes(s.n, s.c, s.spatial)), 0xff);
  EXPECT_EQ(CApi<T>::relu_forward_training(L, s.n, s.c, s.spatial, x.data(), out, weight.data(),
                                           bias.data(), 1e-5, nullptr, nullptr, nullptr,
                                           o.mean.data(), o.invstd.data(), o.mask.data()),
            BNORM_SUCCESS);
  o.y.assign(out, out + count);
  const std::vector<T> y_relu = o.y;

  std::copy(x.begin(), x.end(), out);
  EXPECT_EQ(CApi<T>::forward_training(L, s.n, s.c, s.spatial, out, out, weight.data(), bias.data(),
                                      1e-5, 0.1, o.running_mean.data(), o.running_var.data(),
                                      nullptr, nullptr),
            BNORM_SUCCESS);
  o.y_inplace.assign(out, out + count);

  EXPECT_EQ(CApi<T>::backward(L, s.n, s.c, s.spatial, x.data(), dy.data(), out, weight.data(),
                              o.mean.data(), o.invstd.data(), o.dweight.data(), o.dbias.data()),
            BNORM_SUCCESS);
  o.dx.assign(out, out + count);

  std::copy(dy.begin(), dy.end(), out);
  EXPECT_EQ(CApi<T>::backward(L, s.n, s.c, s.spatial, x.data(), out, out, weight.data(),
                              o.mean.data(), o.invstd.data(), nullptr, nullptr),
            BNORM_SUCCESS);
  o.dx_inplace.assign(out, out + count);

  EXPECT_EQ(CApi<T>::relu_backward(L, s.n, s.c, s.spatial, x.data(), nullptr, o.mask.data(),
                                   dy.data(), out, weight.data(), o.mean.data(),
                                   o.invstd.data(), o.dweight_relu.data(), nullptr),
            BNORM_SUCCESS);
  o.dx_relu_mask.assign(out, out + count);
  EXPECT_EQ(CApi<T>::relu_backward(L, s.n, s.c, s.spatial, x.data(), y_relu.data(), nullptr,
                                   dy.data(), out, weight.data(), o.mean.data(),
                                   o.invstd.data(), nullptr, nullptr),
            BNORM_SUCCESS);
  o.dx_relu_y.assign(out, out + count);

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

template AllPassOutputs<float> run_all_passes<float>(const Shape&, int64_t);
template AllPassOutputs<double> run_all_passes<double>(const Shape&, int64_t);

}  // namespace bnorm::test
