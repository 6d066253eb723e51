// Image classification data sets from IDX files: MNIST, Fashion-MNIST and lookalikes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/idx.h"
#include "data/large_pages.h"

namespace bnorm::data {

struct ImageDataset {
  int64_t count = 0, channels = 1, rows = 0, cols = 0;
  int num_classes = 10;
  // count x channels x rows x cols, pixel / 255.0f in [0, 1]; in 2 MiB pages (a batch's
  // images are gathered from random places)
  std::vector<float, LargePageAllocator<float>> images;
  std::vector<int32_t> labels;  // count values in [0, num_classes)
  int64_t image_size() const { return channels * rows * cols; }
};

// images_path: rank 3 (count x rows x cols); labels_path: rank 1 (count), every label
// in [0, num_classes). Throws DataError naming the offending file otherwise.
ImageDataset load_idx_dataset(const std::string& images_path, const std::string& labels_path,
                              int num_classes = 10);

struct TrainTest {
  ImageDataset train, test;
};

inline constexpr const char* kDefaultFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// Looks in dir for train-images-idx3-ubyte, train-labels-idx1-ubyte,
// t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, each either with ".gz" or plain
// (".gz" wins when both are there). All four are located before any is read.
TrainTest load_mnist_style(const std::string& dir);

// Keeps the first `limit` examples; limit <= 0 or >= count keeps all.
void truncate(ImageDataset& data, int64_t limit);

}  // namespace bnorm::data
