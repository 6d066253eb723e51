// load_idx_dataset, load_mnist_style and truncate on tiny synthetic sets, plus the real
// Fashion-MNIST when the machine has it.
#include <algorithm>
#include <array>
#include <filesystem>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data_test_support.h"

namespace bnorm::data {
namespace {

using testing_support::data_error_of;
using testing_support::idx_bytes;
using testing_support::random_bytes;
using testing_support::write_bytes;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

class DatasetTest : public testing_support::TempDirTest {
 protected:
  // count images of rows x cols with pixels from seed, labels as given.
  void write_set(const std::string& images, const std::string& labels, int64_t count, int64_t rows,
                 int64_t cols, const std::vector<uint8_t>& label_bytes, bool gzip, uint32_t seed = 1) {
    write_idx(images, {count, rows, cols}, random_bytes(static_cast<size_t>(count * rows * cols), seed), gzip);
    write_idx(labels, {static_cast<int64_t>(label_bytes.size())}, label_bytes, gzip);
  }
};

TEST_F(DatasetTest, LoadsPixelsOverTwoFiftyFiveAndLabels) {
  const std::vector<uint8_t> pixels = {0, 255, 51, 1, 128, 254,  // image 0, 2 x 3
                                       7, 8, 9, 10, 11, 12};     // image 1
  for (const bool gzip : {false, true}) {
    SCOPED_TRACE(gzip ? "gzip" : "plain");
    write_idx(path("img"), {2, 2, 3}, pixels, gzip);
    write_idx(path("lab"), {2}, {9, 0}, gzip);
    const ImageDataset data = load_idx_dataset(path("img"), path("lab"));
    EXPECT_EQ(data.count, 2);
    EXPECT_EQ(data.channels, 1);
    EXPECT_EQ(data.rows, 2);
    EXPECT_EQ(data.cols, 3);
    EXPECT_EQ(data.image_size(), 6);
    EXPECT_EQ(data.num_classes, 10);
    ASSERT_EQ(data.images.size(), pixels.size());
    for (size_t i = 0; i < pixels.size(); ++i) EXPECT_EQ(data.images[i], static_cast<float>(pixels[i]) / 255.0f) << i;
    EXPECT_EQ(data.images[0], 0.0f);
    EXPECT_EQ(data.images[1], 1.0f);
    EXPECT_EQ(data.labels, (std::vector<int32_t>{9, 0}));
  }
}

TEST_F(DatasetTest, NumClassesBoundsTheLabels) {
  write_set(path("img"), path("lab"), 4, 2, 2, {0, 1, 2, 1}, false);
  const ImageDataset data = load_idx_dataset(path("img"), path("lab"), 3);
  EXPECT_EQ(data.num_classes, 3);
  EXPECT_EQ(data.labels, (std::vector<int32_t>{0, 1, 2, 1}));
  EXPECT_EQ(data_error_of([&] { load_idx_dataset(path("img"), path("lab"), 2); }),
            path("lab") + ": label 2 at index 2 is out of range [0, 2)");
  EXPECT_THAT(data_error_of([&] { load_idx_dataset(path("img"), path("lab"), 0); }),
              AllOf(StartsWith(path("lab") + ": "), HasSubstr("num_classes")));
}

TEST_F(DatasetTest, LabelOutOfRange) {
  write_set(path("img"), path("lab.gz"), 6, 2, 2, {0, 1, 2, 3, 4, 12}, true);
  EXPECT_EQ(data_error_of([&] { load_idx_dataset(path("img"), path("lab.gz")); }),
            path("lab.gz") + ": label 12 at index 5 is out of range [0, 10)");
}

TEST_F(DatasetTest, CountMismatch) {
  write_set(path("img"), path("lab"), 5, 3, 3, {0, 1, 2, 3}, false);
  EXPECT_EQ(data_error_of([&] { load_idx_dataset(path("img"), path("lab")); }),
            path("img") + ": 5 images but " + path("lab") + ": 4 labels");
}

TEST_F(DatasetTest, ImagesMustBeRankThree) {
  write_idx(path("img"), {5, 9}, random_bytes(45, 2), false);
  write_idx(path("lab"), {5}, {0, 1, 2, 3, 4}, false);
  EXPECT_THAT(data_error_of([&] { load_idx_dataset(path("img"), path("lab")); }),
              AllOf(StartsWith(path("img") + ": "), HasSubstr("rank 3"), HasSubstr("got rank 2 (5 x 9)")));
}

TEST_F(DatasetTest, LabelsMustBeRankOne) {
  write_idx(path("img"), {2, 2, 2}, random_bytes(8, 3), false);
  write_idx(path("lab"), {2, 1}, {0, 1}, false);
  EXPECT_THAT(data_error_of([&] { load_idx_dataset(path("img"), path("lab")); }),
              AllOf(StartsWith(path("lab") + ": "), HasSubstr("rank 1"), HasSubstr("got rank 2")));
}

TEST_F(DatasetTest, SwappedFilesSaySo) {
  write_set(path("img"), path("lab"), 3, 2, 2, {0, 1, 2}, false);
  EXPECT_THAT(data_error_of([&] { load_idx_dataset(path("lab"), path("img")); }),
              AllOf(StartsWith(path("img") + ": labels must be rank 1"), HasSubstr("images file?")));
}

TEST_F(DatasetTest, NoImages) {
  write_idx(path("img"), {0, 28, 28}, {}, false);
  write_idx(path("lab"), {0}, {}, false);
  EXPECT_THAT(data_error_of([&] { load_idx_dataset(path("img"), path("lab")); }),
              AllOf(StartsWith(path("img") + ": "), HasSubstr("no images")));
}

TEST_F(DatasetTest, ZeroSizeImages) {
  write_idx(path("img"), {2, 28, 0}, {}, false);
  write_idx(path("lab"), {2}, {0, 1}, false);
  EXPECT_THAT(data_error_of([&] { load_idx_dataset(path("img"), path("lab")); }),
              AllOf(StartsWith(path("img") + ": "), HasSubstr("28 x 0")));
}

TEST_F(DatasetTest, MissingImagesFileIsNamed) {
  write_idx(path("lab"), {1}, {0}, false);
  EXPECT_EQ(data_error_of([&] { load_idx_dataset(path("img"), path("lab")); }), path("img") + ": no such file");
}

TEST_F(DatasetTest, CorruptImagesFileIsNamed) {
  write_idx(path("lab"), {1}, {0}, false);
  write_bytes(path("img"), idx_bytes({1, 4, 4}, random_bytes(10, 4)));
  EXPECT_THAT(data_error_of([&] { load_idx_dataset(path("img"), path("lab")); }),
              AllOf(StartsWith(path("img") + ": truncated")));
}

// ---- a directory in the MNIST layout ---------------------------------------------

constexpr std::array<const char*, 4> kNames = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};

class MnistStyleTest : public DatasetTest {
 protected:
  // A 5-image training set and a 3-image test set of 4 x 4 pixels; gzip[i] picks
  // ".gz" or plain for kNames[i].
  void write_dir(const std::array<bool, 4>& gzip, uint8_t label_offset = 0) {
    auto name = [&](int i) { return path(std::string(kNames[i]) + (gzip[i] ? ".gz" : "")); };
    write_idx(name(0), {5, 4, 4}, random_bytes(80, 21), gzip[0]);
    write_idx(name(1), {5}, {static_cast<uint8_t>(9 - label_offset), 0, 1, 2, 3}, gzip[1]);
    write_idx(name(2), {3, 4, 4}, random_bytes(48, 22), gzip[2]);
    write_idx(name(3), {3}, {static_cast<uint8_t>(7 - label_offset), 8, 9}, gzip[3]);
  }
  void expect_tiny_sets(const TrainTest& sets) {
    EXPECT_EQ(sets.train.count, 5);
    EXPECT_EQ(sets.test.count, 3);
    for (const ImageDataset* data : {&sets.train, &sets.test}) {
      EXPECT_EQ(data->channels, 1);
      EXPECT_EQ(data->rows, 4);
      EXPECT_EQ(data->cols, 4);
      EXPECT_EQ(data->images.size(), static_cast<size_t>(data->count * 16));
    }
    EXPECT_EQ(sets.train.labels, (std::vector<int32_t>{9, 0, 1, 2, 3}));
    EXPECT_EQ(sets.test.labels, (std::vector<int32_t>{7, 8, 9}));
    EXPECT_EQ(sets.train.images[1], static_cast<float>(random_bytes(80, 21)[1]) / 255.0f);
  }
};

TEST_F(MnistStyleTest, Gzipped) {
  write_dir({true, true, true, true});
  expect_tiny_sets(load_mnist_style(dir().string()));
}

TEST_F(MnistStyleTest, Plain) {
  write_dir({false, false, false, false});
  expect_tiny_sets(load_mnist_style(dir().string()));
}

TEST_F(MnistStyleTest, Mixed) {
  write_dir({true, false, false, true});
  expect_tiny_sets(load_mnist_style(dir().string()));
}

TEST_F(MnistStyleTest, GzipWinsOverPlain) {
  write_dir({false, false, false, false}, /*label_offset=*/1);  // plain files: labels 8 and 6
  write_dir({true, true, true, true});
  expect_tiny_sets(load_mnist_style(dir().string()));
}

TEST_F(MnistStyleTest, MissingFileNamesBothCandidates) {
  write_dir({true, true, true, true});
  std::filesystem::remove(path("t10k-labels-idx1-ubyte.gz"));
  EXPECT_EQ(data_error_of([&] { load_mnist_style(dir().string()); }),
            path("t10k-labels-idx1-ubyte.gz") + ": no such file (looked in " + dir().string() +
                " for t10k-labels-idx1-ubyte.gz or t10k-labels-idx1-ubyte)");
}

TEST_F(MnistStyleTest, EmptyDirectory) {
  EXPECT_THAT(data_error_of([&] { load_mnist_style(dir().string()); }),
              AllOf(StartsWith(path("train-images-idx3-ubyte.gz") + ": no such file"),
                    HasSubstr("train-images-idx3-ubyte.gz or train-images-idx3-ubyte")));
}

TEST_F(MnistStyleTest, MissingDirectory) {
  const std::string missing = path("not-there");
  EXPECT_THAT(data_error_of([&] { load_mnist_style(missing); }),
              AllOf(StartsWith(missing + ": no such directory"), HasSubstr("train-images-idx3-ubyte")));
}

TEST_F(MnistStyleTest, NotADirectory) {
  write_bytes(path("file"), {1, 2, 3});
  EXPECT_EQ(data_error_of([&] { load_mnist_style(path("file")); }), path("file") + ": not a directory");
}

TEST_F(MnistStyleTest, BadFileInsideIsNamed) {
  write_dir({true, true, true, true});
  write_bytes(path("train-labels-idx1-ubyte.gz"), {'n', 'o', 'p', 'e'});
  EXPECT_THAT(data_error_of([&] { load_mnist_style(dir().string()); }),
              StartsWith(path("train-labels-idx1-ubyte.gz") + ": bad magic"));
}

// ---- truncate ---------------------------------------------------------------------

ImageDataset counting_set(int64_t count) {
  ImageDataset data;
  data.count = count;
  data.rows = 2;
  data.cols = 3;
  for (int64_t i = 0; i < count * 6; ++i) data.images.push_back(static_cast<float>(i));
  for (int64_t i = 0; i < count; ++i) data.labels.push_back(static_cast<int32_t>(i % 10));
  return data;
}

TEST(TruncateTest, KeepsTheFirstExamples) {
  ImageDataset data = counting_set(7);
  truncate(data, 3);
  EXPECT_EQ(data.count, 3);
  ASSERT_EQ(data.images.size(), 18u);
  EXPECT_EQ(data.images.front(), 0.0f);
  EXPECT_EQ(data.images.back(), 17.0f);
  EXPECT_EQ(data.labels, (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(data.rows, 2);
  EXPECT_EQ(data.cols, 3);
}

TEST(TruncateTest, NonPositiveOrLargeLimitKeepsAll) {
  for (const int64_t limit : {int64_t{0}, int64_t{-1}, int64_t{7}, int64_t{8}, int64_t{1} << 40}) {
    ImageDataset data = counting_set(7);
    truncate(data, limit);
    EXPECT_EQ(data.count, 7) << limit;
    EXPECT_EQ(data.images.size(), 42u) << limit;
    EXPECT_EQ(data.labels.size(), 7u) << limit;
  }
}

TEST(TruncateTest, ToOne) {
  ImageDataset data = counting_set(7);
  truncate(data, 1);
  EXPECT_EQ(data.count, 1);
  EXPECT_EQ(std::vector<float>(data.images.begin(), data.images.end()),
            (std::vector<float>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(data.labels, (std::vector<int32_t>{0}));
}

// ---- the real thing ---------------------------------------------------------------

TEST(FashionMnistTest, LoadsTheRealFiles) {
  if (!std::filesystem::is_directory(kDefaultFashionMnistDir))
    GTEST_SKIP() << kDefaultFashionMnistDir << " is not on this machine";
  const TrainTest sets = load_mnist_style(kDefaultFashionMnistDir);
  EXPECT_EQ(sets.train.count, 60000);
  EXPECT_EQ(sets.test.count, 10000);
  for (const ImageDataset* data : {&sets.train, &sets.test}) {
    EXPECT_EQ(data->channels, 1);
    EXPECT_EQ(data->rows, 28);
    EXPECT_EQ(data->cols, 28);
    EXPECT_EQ(data->num_classes, 10);
    ASSERT_EQ(data->images.size(), static_cast<size_t>(data->count * 784));
    ASSERT_EQ(data->labels.size(), static_cast<size_t>(data->count));
    // Fashion-MNIST is balanced: count / 10 of each class.
    std::array<int64_t, 10> per_class{};
    for (const int32_t label : data->labels) {
      ASSERT_GE(label, 0);
      ASSERT_LT(label, 10);
      ++per_class[static_cast<size_t>(label)];
    }
    for (const int64_t n : per_class) EXPECT_EQ(n, data->count / 10);
    float lo = 1, hi = 0;
    for (const float v : data->images) lo = std::min(lo, v), hi = std::max(hi, v);
    EXPECT_EQ(lo, 0.0f);
    EXPECT_EQ(hi, 1.0f);
  }
  EXPECT_EQ(sets.train.labels[0], 9);  // "ankle boot"
  EXPECT_EQ(sets.test.labels[0], 9);   // also an ankle boot
}

}  // namespace
}  // namespace bnorm::data

// ---- the data set's memory ----------------------------------------------------------

TEST(LargePageAllocatorTest, BigBlocksAreAlignedToLargePagesAndHoldTheirValues) {
  using bnorm::data::LargePageAllocator;
  using bnorm::data::kLargePage;
  // 3 MiB of floats: past the threshold, so 2 MiB-aligned (and advised to the kernel).
  std::vector<float, LargePageAllocator<float>> big(size_t{3} << 18);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(big.data()) % kLargePage, 0u);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<float>(i);
  big.resize(big.size() * 2);  // reallocation copies into another large block
  EXPECT_EQ(reinterpret_cast<uintptr_t>(big.data()) % kLargePage, 0u);
  for (size_t i = 0; i < (size_t{3} << 18); ++i) ASSERT_EQ(big[i], static_cast<float>(i)) << i;
  std::vector<float, LargePageAllocator<float>> small(100, 1.5f);  // ordinary memory
  EXPECT_EQ(small[99], 1.5f);
  small.clear();
  small.shrink_to_fit();
  EXPECT_EQ(small.capacity(), 0u);
}
