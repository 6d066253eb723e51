// libFuzzer target: the checkpoint reader (src/nn/checkpoint.cpp, read_checkpoint).
//
// Each input is a checkpoint file (format in src/nn/checkpoint.h). It is read twice
// through an in-memory file (mem_file.h):
//   1. as it is: mostly the magic, version and CRC-32 checks;
//   2. with its last 4 bytes replaced by the CRC-32 of the bytes before them, so that a
//      mutated body passes the checksum and reaches the parser behind it (counts,
//      strings, dtypes, ranks, sizes, data lengths, duplicate names, trailing bytes).
// Properties: read_checkpoint returns or throws CheckpointError "<path>: ..."; nothing
// else escapes; a returned checkpoint has unique tensor names, ranks <= 8, sizes >= 0
// and exactly prod(sizes) * dtype_size bytes per tensor, and (pass 2) it could only
// have come from a file that is at least as long as what it holds.
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "mem_file.h"
#include "nn/checkpoint.h"

namespace {

using bnorm::nn::Checkpoint;
using bnorm::nn::CheckpointError;

[[noreturn]] void property_failed(const char* what, const std::string& detail = "") {
  std::fprintf(stderr, "fuzz_checkpoint: property failed: %s %s\n", what, detail.c_str());
  std::abort();
}

void read_and_check(const std::string& path, size_t file_size) {
  Checkpoint c;
  try {
    c = bnorm::nn::read_checkpoint(path);
  } catch (const CheckpointError& e) {
    const std::string message = e.what();
    if (message.compare(0, path.size() + 2, path + ": ") != 0)
      property_failed("CheckpointError does not start with the path:", message);
    return;
  }
  // magic 8 + version 4 + meta count 4 + tensor count 4 + crc 4
  size_t least = 24;
  for (const auto& [k, v] : c.meta) least += 8 + k.size() + v.size();
  std::set<std::string> names;
  for (const auto& t : c.tensors) {
    if (!names.insert(t.name).second) property_failed("duplicate tensor name", t.name);
    if (t.sizes.size() > 8) property_failed("rank > 8");
    size_t count = 1;
    for (const int64_t s : t.sizes) {
      if (s < 0) property_failed("negative size");
      count *= static_cast<size_t>(s);
    }
    const size_t element = bnorm::nn::dtype_size(t.dtype);
    if (element == 0) property_failed("unknown dtype accepted");
    if (t.bytes.size() != count * element) property_failed("tensor bytes != prod(sizes) * element");
    least += 4 + t.name.size() + 2 + 8 * t.sizes.size() + t.bytes.size();
  }
  if (least > file_size) property_failed("checkpoint holds more than its file");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static bnorm::fuzz::MemFile file("fuzz_checkpoint");
  read_and_check(file.write(data, size), size);
  if (size >= 4) {
    std::vector<uint8_t> fixed(data, data + size);
    const size_t body = size - 4;
    const auto crc = static_cast<uint32_t>(crc32(crc32(0L, Z_NULL, 0), fixed.data(), static_cast<uInt>(body)));
    for (int i = 0; i < 4; ++i) fixed[body + i] = static_cast<uint8_t>(crc >> (8 * i));
    read_and_check(file.write(fixed.data(), fixed.size()), size);
  }
  return 0;
}
