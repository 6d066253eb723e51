// The models the command line knows by name. Every model takes (N, 1, 28, 28)
// images (MNIST / Fashion-MNIST) and returns 10 logits.
//
//   lenet      d2l's LeNet: conv(1->6,k5,p2)-sigmoid-avgpool2 -> conv(6->16,k5)-
//              sigmoid-avgpool2 -> fc 400->120-sigmoid -> 84-sigmoid -> 10
//   lenet-bn   d2l's LeNet with batch norm: conv(1->6,k5)-BN-sigmoid-avgpool2 ->
//              conv(6->16,k5)-BN-sigmoid-avgpool2 -> fc 256->120-BN-sigmoid ->
//              84-BN-sigmoid -> 10
//   mlp        784->256-ReLU->256-ReLU->10
//   mlp-bn     784->256-BN-ReLU->256-BN-ReLU->10
//   vgg        conv(1->16,k3,p1)-ReLU x2 (16) -maxpool2 -> conv(16->32,k3,p1)-ReLU x2 (32)
//              -maxpool2 -> fc 1568->128-ReLU-dropout(0.5) -> 10
//   vgg-bn     the same with BN after every convolution and the hidden fc layer
// Initialization: LeNets Xavier-uniform (as d2l), the ReLU models Kaiming-uniform;
// biases PyTorch's default U(+-1/sqrt(fan_in)); BN weight 1, bias 0.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "nn/sequential.h"

namespace bnorm::nn {

const std::vector<std::string>& model_names();

// Throws std::invalid_argument for an unknown name (listing the known ones).
template <class T>
std::unique_ptr<Sequential<T>> make_model(const std::string& name, uint64_t seed);

extern template std::unique_ptr<Sequential<float>> make_model<float>(const std::string&, uint64_t);
extern template std::unique_ptr<Sequential<double>> make_model<double>(const std::string&, uint64_t);

}  // namespace bnorm::nn
