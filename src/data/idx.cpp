#include "data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <system_error>
#include <type_traits>

namespace bnorm::data {
namespace {

constexpr uint8_t kUnsignedByteType = 0x08;
constexpr size_t kMaxRank = 255;  // the rank is one byte of the magic
constexpr int64_t kMaxDim = 0xFFFFFFFF;
// First read of the data section. Each later read asks for as much as has been read so
// far (the buffer doubles), up to what the header says: MNIST's 47 MB takes 11 reads,
// and a header that lies about its size costs at most this much before the file runs
// out. (It was 64 MiB, zero-filled before the first read: fuzzing found an 8-byte file
// that cost a 64 MiB allocation and about a second under ASan.)
constexpr size_t kFirstChunk = size_t{64} << 10;
constexpr size_t kMaxGzCall = size_t{1} << 30;  // gzread/gzwrite take an unsigned length
constexpr unsigned kGzBufferBytes = 1u << 17;   // zlib's 8 KiB default costs many syscalls

[[noreturn]] void fail(const std::string& path, const std::string& problem) {
  throw DataError(path + ": " + problem);
}

struct GzCloser {
  void operator()(gzFile file) const { gzclose(file); }
};
using GzFile = std::unique_ptr<std::remove_pointer_t<gzFile>, GzCloser>;

// zlib's message for the last error, without the "<path>: " prefix zlib puts on it.
std::string zlib_message(gzFile file, const std::string& path, int* errnum = nullptr) {
  int code = Z_OK;
  const char* message = gzerror(file, &code);
  if (errnum != nullptr) *errnum = code;
  std::string text = message != nullptr ? message : "";
  const std::string prefix = path + ": ";
  if (text.compare(0, prefix.size(), prefix) == 0) text.erase(0, prefix.size());
  return text;
}

// " (gzip: unexpected end of file)" when zlib saw the compressed stream stop short,
// so a truncated .gz is told apart from a complete file with a wrong header.
std::string eof_note(gzFile file, const std::string& path) {
  int code = Z_OK;
  const std::string message = zlib_message(file, path, &code);
  return code == Z_BUF_ERROR ? " (gzip stream cut short: " + message + ")" : "";
}

// Reads up to n bytes; fewer only at the end of the file. A read error throws.
size_t read_some(gzFile file, const std::string& path, uint8_t* out, size_t n) {
  size_t got = 0;
  while (got < n) {
    const auto ask = static_cast<unsigned>(std::min(n - got, kMaxGzCall));
    const int r = gzread(file, out + got, ask);
    if (r < 0) {
      int code = Z_OK;
      const std::string message = zlib_message(file, path, &code);
      fail(path, (code == Z_DATA_ERROR ? "corrupt gzip stream: " : "read error: ") + message);
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  return got;
}

GzFile open_for_reading(const std::string& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (status.type() == std::filesystem::file_type::not_found) fail(path, "no such file");
  if (status.type() == std::filesystem::file_type::directory)
    fail(path, "is a directory, expected an IDX file");
  errno = 0;
  GzFile file(gzopen(path.c_str(), "rb"));
  if (!file)
    fail(path, std::string("cannot open: ") + (errno != 0 ? std::strerror(errno) : "gzopen failed"));
  gzbuffer(file.get(), kGzBufferBytes);
  return file;
}

std::string hex32(const uint8_t bytes[4]) {
  char text[11];
  std::snprintf(text, sizeof text, "0x%02X%02X%02X%02X", bytes[0], bytes[1], bytes[2], bytes[3]);
  return text;
}

const char* idx_type_name(uint8_t type) {
  switch (type) {
    case 0x09: return "signed bytes";
    case 0x0B: return "16-bit integers";
    case 0x0C: return "32-bit integers";
    case 0x0D: return "32-bit floats";
    case 0x0E: return "64-bit floats";
    default: return nullptr;
  }
}

void check_magic(const std::string& path, const uint8_t magic[4]) {
  if (magic[0] == 0 && magic[1] == 0 && magic[2] == kUnsignedByteType) return;
  std::string problem = "bad magic " + hex32(magic) +
                        " (expected an IDX file of unsigned bytes, 0x00000801 or 0x00000803)";
  if (magic[0] == 0 && magic[1] == 0 && idx_type_name(magic[2]) != nullptr)
    problem += ": this IDX file holds " + std::string(idx_type_name(magic[2])) +
               ", only unsigned bytes (type 0x08) are supported";
  else if (magic[1] == kUnsignedByteType && magic[2] == 0 && magic[3] == 0)
    problem += ": the header looks byte-swapped (written little-endian)";
  fail(path, problem);
}

std::string dims_text(const std::vector<int64_t>& dims) {
  std::string text;
  for (size_t i = 0; i < dims.size(); ++i) text += (i ? " x " : "") + std::to_string(dims[i]);
  return text;
}

// "60000 x 28 x 28 = 47040000" (just "60000" for rank 1).
std::string size_text(const std::vector<int64_t>& dims, int64_t total) {
  return dims.size() == 1 ? dims_text(dims) : dims_text(dims) + " = " + std::to_string(total);
}

// prod(dims), or -1 when it overflows int64_t (a zero dim wins over any overflow).
int64_t element_count(const std::vector<int64_t>& dims) {
  if (std::find(dims.begin(), dims.end(), 0) != dims.end()) return 0;
  int64_t total = 1;
  for (const int64_t d : dims)
    if (__builtin_mul_overflow(total, d, &total)) return -1;
  return total;
}

void write_all(gzFile file, const std::string& path, const uint8_t* data, size_t n) {
  while (n > 0) {
    const auto chunk = static_cast<unsigned>(std::min(n, kMaxGzCall));
    if (gzwrite(file, data, chunk) != static_cast<int>(chunk))
      fail(path, "write error: " + zlib_message(file, path));
    data += chunk;
    n -= chunk;
  }
}

}  // namespace

IdxArray read_idx(const std::string& path) {
  const GzFile file = open_for_reading(path);

  uint8_t magic[4];
  const size_t magic_got = read_some(file.get(), path, magic, sizeof magic);
  if (magic_got < sizeof magic)
    fail(path, "truncated: file has " + std::to_string(magic_got) +
                   " bytes, an IDX header needs at least 4" + eof_note(file.get(), path));
  check_magic(path, magic);
  const size_t rank = magic[3];
  if (rank == 0) fail(path, "rank 0 in magic " + hex32(magic) + ": an IDX array needs at least one dimension");

  std::vector<uint8_t> size_bytes(4 * rank);
  const size_t sizes_got = read_some(file.get(), path, size_bytes.data(), size_bytes.size());
  if (sizes_got < size_bytes.size())
    fail(path, "truncated: header declares rank " + std::to_string(rank) + " (" +
                   std::to_string(size_bytes.size()) + " bytes of sizes), file has " +
                   std::to_string(sizes_got) + eof_note(file.get(), path));
  IdxArray array;
  array.dims.resize(rank);
  for (size_t i = 0; i < rank; ++i) {
    const uint8_t* b = &size_bytes[4 * i];
    array.dims[i] = int64_t{b[0]} << 24 | int64_t{b[1]} << 16 | int64_t{b[2]} << 8 | int64_t{b[3]};
  }

  const int64_t total = element_count(array.dims);
  if (total < 0)
    fail(path, "header says " + dims_text(array.dims) +
                   " bytes of data, which overflows 64 bits; the header is corrupt");
  if (total > kMaxIdxDataBytes)
    fail(path, "header says " + size_text(array.dims, total) + " bytes of data, over the " +
                   std::to_string(kMaxIdxDataBytes) + "-byte limit; the header is probably corrupt");

  const auto expected = static_cast<size_t>(total);
  std::vector<uint8_t>& bytes = array.bytes;
  size_t have = 0;
  while (have < expected) {
    const size_t ask = std::min(expected - have, std::max(kFirstChunk, have));
    bytes.resize(have + ask);
    const size_t got = read_some(file.get(), path, bytes.data() + have, ask);
    have += got;
    if (got < ask) break;
  }
  bytes.resize(have);
  if (have < expected)
    fail(path, "truncated: header says " + size_text(array.dims, total) +
                   " bytes of data, file has " + std::to_string(have) + eof_note(file.get(), path));

  // Reading past the data also makes zlib check the gzip trailer (CRC-32 and length).
  uint8_t extra[4096];
  const size_t extra_got = read_some(file.get(), path, extra, sizeof extra);
  if (extra_got > 0)
    fail(path, "trailing data after the " + std::to_string(expected) +
                   " bytes of data the header describes (" +
                   (extra_got == sizeof extra ? "at least " : "") + std::to_string(extra_got) +
                   " more bytes); the header does not match the file");
  int code = Z_OK;
  const std::string message = zlib_message(file.get(), path, &code);
  if (code == Z_BUF_ERROR)
    fail(path, "truncated gzip stream: " + message +
                   " after all the data, so its CRC-32 trailer is missing");
  return array;
}

void write_idx(const std::string& path, const std::vector<int64_t>& dims,
               const std::vector<uint8_t>& bytes, bool gzip) {
  if (dims.empty() || dims.size() > kMaxRank)
    fail(path, "cannot write rank " + std::to_string(dims.size()) + ": IDX allows 1 to 255 dims");
  for (size_t i = 0; i < dims.size(); ++i)
    if (dims[i] < 0 || dims[i] > kMaxDim)
      fail(path, "cannot write dim " + std::to_string(i) + " = " + std::to_string(dims[i]) +
                     ": IDX sizes are in [0, 4294967295]");
  const int64_t total = element_count(dims);
  if (total < 0 || static_cast<uint64_t>(total) != bytes.size())
    fail(path, "cannot write: dims " + dims_text(dims) + " do not match the " +
                   std::to_string(bytes.size()) + " bytes given");

  std::vector<uint8_t> header = {0, 0, kUnsignedByteType, static_cast<uint8_t>(dims.size())};
  for (const int64_t d : dims)
    for (int shift = 24; shift >= 0; shift -= 8) header.push_back(static_cast<uint8_t>(d >> shift));

  errno = 0;
  // "T" writes the file uncompressed through the same code path.
  GzFile file(gzopen(path.c_str(), gzip ? "wb" : "wbT"));
  if (!file)
    fail(path, std::string("cannot open for writing: ") +
                   (errno != 0 ? std::strerror(errno) : "gzopen failed"));
  write_all(file.get(), path, header.data(), header.size());
  write_all(file.get(), path, bytes.data(), bytes.size());
  errno = 0;
  const int rc = gzclose(file.release());
  if (rc != Z_OK)
    fail(path, "write error on close: " +
                   std::string(rc == Z_ERRNO ? std::strerror(errno) : zError(rc)));
}

}  // namespace bnorm::data
