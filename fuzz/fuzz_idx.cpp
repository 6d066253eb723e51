// libFuzzer target: the IDX reader (src/data/idx.cpp) and the data set loader over it.
//
// Each input is the content of one IDX file, gzipped or plain, written to an in-memory
// file (mem_file.h) that read_idx opens by path, as it opens MNIST. Properties:
//   - read_idx returns or throws DataError "<path>: <one line>"; nothing else escapes;
//   - a returned array has rank 1..255, dims < 2^32, prod(dims) == bytes.size();
//   - on plain (not gzip) input it agrees with an independent parse of the format:
//     success exactly when the file is magic + sizes + prod(sizes) bytes, and then the
//     same dims and bytes;
//   - a rank-1 result loads as labels and a rank-3 one as images (load_idx_dataset)
//     beside a made-up partner file, and the loader agrees with the labels' range.
// Any other outcome, and any ASan/UBSan report, is a crash.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/idx.h"
#include "mem_file.h"

namespace {

using bnorm::data::DataError;
using bnorm::data::IdxArray;

[[noreturn]] void property_failed(const char* what, const std::string& detail = "") {
  std::fprintf(stderr, "fuzz_idx: property failed: %s %s\n", what, detail.c_str());
  std::abort();
}

void check_message(const std::string& path, const std::string& message) {
  if (message.compare(0, path.size() + 2, path + ": ") != 0)
    property_failed("DataError does not start with the path:", message);
  if (message.find('\n') != std::string::npos) property_failed("DataError is not one line:", message);
}

struct Plain {
  bool valid = false;
  std::vector<int64_t> dims;
  size_t data_offset = 0;
};

// The format, parsed independently of src/data: magic 00 00 08 rank, rank big-endian
// u32 sizes, then exactly prod(sizes) bytes.
Plain parse_plain(const uint8_t* data, size_t size) {
  Plain p;
  if (size < 4 || data[0] != 0 || data[1] != 0 || data[2] != 0x08 || data[3] == 0) return p;
  const size_t rank = data[3];
  if (size < 4 + 4 * rank) return p;
  using u128 = unsigned __int128;
  u128 total = 1;
  for (size_t i = 0; i < rank; ++i) {
    const uint8_t* b = data + 4 + 4 * i;
    const uint32_t d = uint32_t{b[0]} << 24 | uint32_t{b[1]} << 16 | uint32_t{b[2]} << 8 | b[3];
    p.dims.push_back(d);
    total *= d;
    if (total > (u128{1} << 64)) total = u128{1} << 64;  // saturate: no u128 overflow
  }
  p.data_offset = 4 + 4 * rank;
  p.valid = total == size - p.data_offset;
  return p;
}

int64_t product(const std::vector<int64_t>& dims) {
  for (const int64_t d : dims)
    if (d == 0) return 0;  // 0 x 2^32 x 2^32 is a valid empty array
  int64_t total = 1;
  for (const int64_t d : dims) total *= d;  // then bounded: the reader caps data at 2^31
  return total;
}

void check_dataset(const IdxArray& array, const std::string& path, bnorm::fuzz::MemFile& partner) {
  if (array.dims.size() == 1 && array.dims[0] <= 4096) {
    // As labels, beside count images of 1 x 1 pixel.
    const int64_t count = array.dims[0];
    std::vector<uint8_t> images = {0, 0, 8, 3};
    for (const int64_t d : {count, int64_t{1}, int64_t{1}})
      for (int shift = 24; shift >= 0; shift -= 8) images.push_back(static_cast<uint8_t>(d >> shift));
    images.resize(images.size() + static_cast<size_t>(count), 255);
    const std::string& images_path = partner.write(images.data(), images.size());
    bool in_range = true;
    for (const uint8_t label : array.bytes) in_range = in_range && label < 10;
    try {
      const auto set = bnorm::data::load_idx_dataset(images_path, path);
      if (!in_range || count == 0) property_failed("loader accepted bad labels");
      if (set.count != count || set.labels.size() != static_cast<size_t>(count) ||
          set.images.size() != static_cast<size_t>(count) || set.images[0] != 1.0f)
        property_failed("loader returned the wrong sizes");
    } catch (const DataError& e) {
      if (in_range && count > 0) property_failed("loader rejected good labels:", e.what());
    }
  } else if (array.dims.size() == 3 && array.dims[0] <= 4096) {
    // As images, beside count labels of 0.
    const int64_t count = array.dims[0];
    std::vector<uint8_t> labels = {0, 0, 8, 1};
    for (int shift = 24; shift >= 0; shift -= 8) labels.push_back(static_cast<uint8_t>(count >> shift));
    labels.resize(labels.size() + static_cast<size_t>(count), 0);
    const std::string& labels_path = partner.write(labels.data(), labels.size());
    const bool good = count > 0 && array.dims[1] > 0 && array.dims[2] > 0;
    try {
      const auto set = bnorm::data::load_idx_dataset(path, labels_path);
      if (!good) property_failed("loader accepted empty images");
      if (set.images.size() != array.bytes.size() || set.rows != array.dims[1] ||
          set.cols != array.dims[2])
        property_failed("loader returned the wrong sizes");
      for (size_t i = 0; i < array.bytes.size(); ++i)
        if (set.images[i] != static_cast<float>(array.bytes[i]) / 255.0f)
          property_failed("loader changed a pixel");
    } catch (const DataError& e) {
      if (good) property_failed("loader rejected good images:", e.what());
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static bnorm::fuzz::MemFile file("fuzz_idx");
  static bnorm::fuzz::MemFile partner("fuzz_idx_partner");
  const std::string& path = file.write(data, size);
  const bool plain = size == 0 || data[0] != 0x1f;  // gzip files start 1f 8b
  const Plain expected = plain ? parse_plain(data, size) : Plain{};

  IdxArray array;
  try {
    array = bnorm::data::read_idx(path);
  } catch (const DataError& e) {
    check_message(path, e.what());
    if (expected.valid) property_failed("rejected a valid plain file:", e.what());
    return 0;
  }
  if (array.dims.empty() || array.dims.size() > 255) property_failed("rank out of 1..255");
  for (const int64_t d : array.dims)
    if (d < 0 || d > 0xFFFFFFFFll) property_failed("dim out of [0, 2^32)");
  if (static_cast<uint64_t>(product(array.dims)) != array.bytes.size())
    property_failed("prod(dims) != bytes.size()");
  if (plain) {
    if (!expected.valid) property_failed("accepted an invalid plain file");
    if (array.dims != expected.dims) property_failed("dims differ from the independent parse");
    if (!array.bytes.empty() &&
        std::memcmp(array.bytes.data(), data + expected.data_offset, array.bytes.size()) != 0)
      property_failed("data differ from the file");
  }
  check_dataset(array, path, partner);
  return 0;
}
