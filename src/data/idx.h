// IDX files, the container of MNIST and Fashion-MNIST, gzipped or plain.
//
// Format (all integers big-endian):
//   magic  4 bytes  0x00 0x00, type (0x08 = unsigned byte), rank (number of dims)
//   sizes  rank x u32
//   data   prod(sizes) bytes, row-major
// Only the unsigned-byte type is supported: it is the one the MNIST family uses.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace bnorm::data {

// Every failure of the data loader: one line, "<path>: <problem>".
class DataError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct IdxArray {
  std::vector<int64_t> dims;   // rank sizes, outermost first
  std::vector<uint8_t> bytes;  // prod(dims) values, row-major
};

// Largest data section read_idx accepts; a header asking for more is taken as corrupt
// and rejected before anything is allocated.
inline constexpr int64_t kMaxIdxDataBytes = int64_t{1} << 31;

// Reads a gzipped or plain IDX file of unsigned bytes (zlib tells the two apart).
// Throws DataError naming the file and the problem: missing, a directory, bad magic,
// truncated header or data, trailing data, absurd sizes, a corrupt gzip stream.
IdxArray read_idx(const std::string& path);

// Writes an IDX file of unsigned bytes, gzipped or plain. prod(dims) must equal
// bytes.size(), with 1 to 255 dims, each in [0, 2^32). Throws DataError otherwise or
// when the file cannot be written.
void write_idx(const std::string& path, const std::vector<int64_t>& dims,
               const std::vector<uint8_t>& bytes, bool gzip);

}  // namespace bnorm::data
