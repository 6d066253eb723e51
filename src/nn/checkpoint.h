// The checkpoint file: named tensors plus string metadata, with a checksum.
//
// Format (all integers little-endian; version 1):
//   magic      8 bytes  "BNORMCKP"
//   version    u32      1
//   meta_count u32, then meta_count x (key: string, value: string)
//   tensor_count u32, then tensor_count x
//     name: string, dtype: u8 (1 = float32, 2 = float64, 3 = int64),
//     rank: u8 (0..8), sizes: rank x i64, data: prod(sizes) x element bytes
//   crc32      u32      zlib's CRC-32 of every byte before it
// string = u32 length + that many bytes (UTF-8, no terminator).
// The writer writes "<path>.tmp.<pid>", flushes and fsyncs it, then renames it over
// <path>: a crash leaves the old file or the new one, never half of one.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace bnorm::nn {

class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class DType : uint8_t { float32 = 1, float64 = 2, int64 = 3 };

struct CheckpointTensor {
  std::string name;
  DType dtype = DType::float32;
  std::vector<int64_t> sizes;
  std::vector<uint8_t> bytes;  // little-endian values
};

struct Checkpoint {
  std::map<std::string, std::string> meta;
  std::vector<CheckpointTensor> tensors;

  const CheckpointTensor* find(const std::string& name) const;
};

inline constexpr uint32_t kCheckpointVersion = 1;

void write_checkpoint(const std::string& path, const Checkpoint& checkpoint);
// Throws CheckpointError naming the file and the problem: missing, not a checkpoint,
// a newer version, truncated, inconsistent sizes, checksum mismatch.
Checkpoint read_checkpoint(const std::string& path);

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);

}  // namespace bnorm::nn
