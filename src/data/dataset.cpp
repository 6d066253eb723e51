#include "data/dataset.h"

#include <filesystem>
#include <system_error>

namespace bnorm::data {
namespace {

namespace fs = std::filesystem;

[[noreturn]] void fail(const std::string& path, const std::string& problem) {
  throw DataError(path + ": " + problem);
}

std::string dims_text(const std::vector<int64_t>& dims) {
  std::string text;
  for (size_t i = 0; i < dims.size(); ++i) text += (i ? " x " : "") + std::to_string(dims[i]);
  return text;
}

constexpr const char* kMnistNames[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};

std::string locate(const fs::path& dir, const std::string& name) {
  const fs::path gz = dir / (name + ".gz");
  const fs::path plain = dir / name;
  std::error_code ec;
  if (fs::exists(gz, ec)) return gz.string();
  if (fs::exists(plain, ec)) return plain.string();
  fail(gz.string(), "no such file (looked in " + dir.string() + " for " + name + ".gz or " + name + ")");
}

}  // namespace

ImageDataset load_idx_dataset(const std::string& images_path, const std::string& labels_path,
                              int num_classes) {
  if (num_classes < 1)
    fail(labels_path, "num_classes must be >= 1, got " + std::to_string(num_classes));

  // Labels first: the small file fails fast, before 47 MB of pixels are inflated.
  const IdxArray labels = read_idx(labels_path);
  if (labels.dims.size() != 1)
    fail(labels_path, "labels must be rank 1 (count), got rank " + std::to_string(labels.dims.size()) +
                          " (" + dims_text(labels.dims) + ")" +
                          (labels.dims.size() == 3 ? "; is this an images file?" : ""));
  for (size_t i = 0; i < labels.bytes.size(); ++i)
    if (labels.bytes[i] >= num_classes)
      fail(labels_path, "label " + std::to_string(labels.bytes[i]) + " at index " + std::to_string(i) +
                            " is out of range [0, " + std::to_string(num_classes) + ")");

  const IdxArray images = read_idx(images_path);
  if (images.dims.size() != 3)
    fail(images_path, "images must be rank 3 (count x rows x cols), got rank " +
                          std::to_string(images.dims.size()) + " (" + dims_text(images.dims) + ")" +
                          (images.dims.size() == 1 ? "; is this a labels file?" : ""));
  const int64_t count = images.dims[0];
  if (count != labels.dims[0])
    throw DataError(images_path + ": " + std::to_string(count) + " images but " + labels_path + ": " +
                    std::to_string(labels.dims[0]) + " labels");
  if (count == 0) fail(images_path, "no images (" + dims_text(images.dims) + ")");
  if (images.dims[1] == 0 || images.dims[2] == 0)
    fail(images_path, "images of " + std::to_string(images.dims[1]) + " x " +
                          std::to_string(images.dims[2]) + " pixels: rows and cols must be >= 1");

  ImageDataset data;
  data.count = count;
  data.channels = 1;
  data.rows = images.dims[1];
  data.cols = images.dims[2];
  data.num_classes = num_classes;
  data.images.resize(images.bytes.size());
  for (size_t i = 0; i < images.bytes.size(); ++i)
    data.images[i] = static_cast<float>(images.bytes[i]) / 255.0f;
  data.labels.assign(labels.bytes.begin(), labels.bytes.end());
  return data;
}

TrainTest load_mnist_style(const std::string& dir) {
  std::error_code ec;
  const auto status = fs::status(dir, ec);
  if (status.type() == fs::file_type::not_found)
    fail(dir, "no such directory (expected it to hold train-images-idx3-ubyte, "
              "train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, "
              "each plain or .gz)");
  if (ec) fail(dir, "cannot access: " + ec.message());
  if (status.type() != fs::file_type::directory) fail(dir, "not a directory");

  // Locate all four before reading any, so a missing file is reported at once.
  std::string paths[4];
  for (int i = 0; i < 4; ++i) paths[i] = locate(dir, kMnistNames[i]);
  TrainTest result;
  result.train = load_idx_dataset(paths[0], paths[1]);
  result.test = load_idx_dataset(paths[2], paths[3]);
  return result;
}

void truncate(ImageDataset& data, int64_t limit) {
  if (limit <= 0 || limit >= data.count) return;
  data.count = limit;
  data.images.resize(static_cast<size_t>(limit * data.image_size()));
  data.images.shrink_to_fit();  // a quick run on 1000 of 60000 should not hold 188 MB
  data.labels.resize(static_cast<size_t>(limit));
  data.labels.shrink_to_fit();
}

}  // namespace bnorm::data
