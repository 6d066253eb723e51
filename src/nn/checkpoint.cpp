#include "nn/checkpoint.h"

#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string_view>

#include "io/atomic_file.h"

namespace bnorm::nn {

namespace {

constexpr char kMagic[8] = {'B', 'N', 'O', 'R', 'M', 'C', 'K', 'P'};
constexpr uint8_t kMaxRank = 8;

class Writer {
 public:
  void bytes(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    out_.insert(out_.end(), b, b + n);
  }
  template <class U>
  void le(U v) {  // little-endian, whatever the host
    for (size_t i = 0; i < sizeof(U); ++i) out_.push_back(static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i)));
  }
  void str(const std::string& s) {
    le<uint32_t>(static_cast<uint32_t>(s.size()));
    bytes(s.data(), s.size());
  }
  std::vector<uint8_t>& buffer() { return out_; }

 private:
  std::vector<uint8_t> out_;
};

class Reader {
 public:
  Reader(const std::string& path, const std::vector<uint8_t>& data, size_t end)
      : path_(path), data_(data), end_(end) {}

  [[noreturn]] void fail(const std::string& what) const {
    std::ostringstream s;
    s << path_ << ": " << what << " (at byte " << pos_ << ")";
    throw CheckpointError(s.str());
  }
  void need(size_t n, const char* what) {
    if (n > end_ - pos_) fail(std::string("truncated: ") + what + " runs past the end of the file");
  }
  template <class U>
  U le(const char* what) {
    need(sizeof(U), what);
    uint64_t v = 0;
    for (size_t i = 0; i < sizeof(U); ++i) v |= static_cast<uint64_t>(data_[pos_ + i]) << (8 * i);
    pos_ += sizeof(U);
    return static_cast<U>(v);
  }
  std::string str(const char* what) {
    const auto n = le<uint32_t>(what);
    need(n, what);
    std::string s(reinterpret_cast<const char*>(data_.data() + pos_), n);
    pos_ += n;
    return s;
  }
  std::vector<uint8_t> take(size_t n, const char* what) {
    need(n, what);
    std::vector<uint8_t> v(data_.begin() + static_cast<std::ptrdiff_t>(pos_),
                           data_.begin() + static_cast<std::ptrdiff_t>(pos_ + n));
    pos_ += n;
    return v;
  }
  size_t pos() const { return pos_; }

 private:
  const std::string& path_;
  const std::vector<uint8_t>& data_;
  size_t end_;
  size_t pos_ = 0;
};

uint32_t crc_of(const uint8_t* p, size_t n) {
  uLong crc = crc32(0L, Z_NULL, 0);
  while (n > 0) {
    const auto chunk = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    crc = crc32(crc, p, chunk);
    p += chunk;
    n -= chunk;
  }
  return static_cast<uint32_t>(crc);
}

std::string errno_text() { return std::strerror(errno); }

}  // namespace

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::float32: return 4;
    case DType::float64: return 8;
    case DType::int64: return 8;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::float32: return "float32";
    case DType::float64: return "float64";
    case DType::int64: return "int64";
  }
  return "?";
}

const CheckpointTensor* Checkpoint::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

void write_checkpoint(const std::string& path, const Checkpoint& c) {
  Writer w;
  w.bytes(kMagic, sizeof kMagic);
  w.le<uint32_t>(kCheckpointVersion);
  w.le<uint32_t>(static_cast<uint32_t>(c.meta.size()));
  for (const auto& [k, v] : c.meta) w.str(k), w.str(v);
  w.le<uint32_t>(static_cast<uint32_t>(c.tensors.size()));
  for (const auto& t : c.tensors) {
    if (t.sizes.size() > kMaxRank) throw CheckpointError("checkpoint: tensor " + t.name + " has too many dimensions");
    size_t count = 1;
    for (int64_t s : t.sizes) count *= static_cast<size_t>(s);
    if (count * dtype_size(t.dtype) != t.bytes.size())
      throw CheckpointError("checkpoint: tensor " + t.name + " has a byte count that does not match its sizes");
    w.str(t.name);
    w.le<uint8_t>(static_cast<uint8_t>(t.dtype));
    w.le<uint8_t>(static_cast<uint8_t>(t.sizes.size()));
    for (int64_t s : t.sizes) w.le<int64_t>(s);
    w.bytes(t.bytes.data(), t.bytes.size());
  }
  auto& buf = w.buffer();
  w.le<uint32_t>(crc_of(buf.data(), buf.size()));

  try {
    io::write_file_atomically(
        path, std::string_view(reinterpret_cast<const char*>(buf.data()), buf.size()));
  } catch (const io::FileError& e) {
    throw CheckpointError(e.what());
  }
}

Checkpoint read_checkpoint(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw CheckpointError(path + ": no such checkpoint file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CheckpointError(path + ": cannot open: " + errno_text());
  std::vector<uint8_t> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (data.size() < sizeof kMagic + 8 || std::memcmp(data.data(), kMagic, sizeof kMagic) != 0)
    throw CheckpointError(path + ": not a bnorm checkpoint (no BNORMCKP magic)");
  const size_t body = data.size() - 4;
  uint32_t stored = 0;
  for (int i = 0; i < 4; ++i) stored |= static_cast<uint32_t>(data[body + i]) << (8 * i);
  Reader r(path, data, body);
  r.take(sizeof kMagic, "magic");
  const auto version = r.le<uint32_t>("version");
  if (version != kCheckpointVersion) {
    std::ostringstream s;
    s << path << ": checkpoint format version " << version << " (this build reads version "
      << kCheckpointVersion << ")";
    throw CheckpointError(s.str());
  }
  if (crc_of(data.data(), body) != stored)
    throw CheckpointError(path + ": checksum mismatch: the file is damaged or truncated");

  Checkpoint c;
  const auto n_meta = r.le<uint32_t>("metadata count");
  for (uint32_t i = 0; i < n_meta; ++i) {
    std::string k = r.str("metadata key");
    c.meta[k] = r.str("metadata value");
  }
  const auto n_tensors = r.le<uint32_t>("tensor count");
  std::set<std::string> names;
  for (uint32_t i = 0; i < n_tensors; ++i) {
    CheckpointTensor t;
    t.name = r.str("tensor name");
    const auto dtype = r.le<uint8_t>("dtype");
    if (dtype < 1 || dtype > 3) r.fail("tensor " + t.name + ": unknown dtype code " + std::to_string(dtype));
    t.dtype = static_cast<DType>(dtype);
    const auto rank = r.le<uint8_t>("rank");
    if (rank > kMaxRank) r.fail("tensor " + t.name + ": rank " + std::to_string(rank) + " > 8");
    size_t count = 1;
    for (uint8_t d = 0; d < rank; ++d) {
      const auto s = r.le<int64_t>("sizes");
      if (s < 0 || (s > 0 && count > (size_t{1} << 40) / static_cast<size_t>(s)))
        r.fail("tensor " + t.name + ": bad size " + std::to_string(s));
      t.sizes.push_back(s);
      count *= static_cast<size_t>(s);
    }
    t.bytes = r.take(count * dtype_size(t.dtype), "tensor data");
    if (!names.insert(t.name).second) r.fail("tensor " + t.name + " appears twice");
    c.tensors.push_back(std::move(t));
  }
  if (r.pos() != body) r.fail("trailing bytes after the last tensor");
  return c;
}

}  // namespace bnorm::nn
