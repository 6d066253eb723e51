// read_idx / write_idx: the byte layout, gzip and plain round trips, and every way a
// file can be wrong, each reported as a one-line DataError naming the file.
#include <sys/resource.h>

#include <cstdlib>
#include <string>
#include <tuple>
#include <vector>

#include "data/idx.h"
#include "data_test_support.h"

namespace bnorm::data {
namespace {

using testing_support::data_error_of;
using testing_support::idx_bytes;
using testing_support::random_bytes;
using testing_support::read_bytes;
using testing_support::write_bytes;
using testing_support::write_gzip_bytes;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

class IdxTest : public testing_support::TempDirTest {};

TEST_F(IdxTest, WritesTheDocumentedLayout) {
  const std::string file = path("plain-idx3-ubyte");
  write_idx(file, {2, 3, 0x010203}, random_bytes(6 * 0x010203, 1), /*gzip=*/false);
  const std::vector<uint8_t> raw = read_bytes(file);
  ASSERT_EQ(raw.size(), 4 + 12 + 6 * 0x010203u);
  const std::vector<uint8_t> header(raw.begin(), raw.begin() + 16);
  EXPECT_EQ(header, (std::vector<uint8_t>{0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 1, 2, 3}));
}

TEST_F(IdxTest, GzipWriteIsAGzipFileOfTheSameLayout) {
  const std::vector<uint8_t> data = random_bytes(20, 2);
  write_idx(path("a.gz"), {4, 5}, data, /*gzip=*/true);
  write_idx(path("a"), {4, 5}, data, /*gzip=*/false);
  const std::vector<uint8_t> gz = read_bytes(path("a.gz"));
  ASSERT_GE(gz.size(), 2u);
  EXPECT_EQ(gz[0], 0x1f);
  EXPECT_EQ(gz[1], 0x8b);
  EXPECT_EQ(read_bytes(path("a")), idx_bytes({4, 5}, data));
}

TEST_F(IdxTest, ReadsAHandBuiltFile) {
  const std::vector<uint8_t> data = {0, 1, 2, 127, 128, 254, 255, 42};
  write_bytes(path("hand"), idx_bytes({2, 2, 2}, data));
  const IdxArray array = read_idx(path("hand"));
  EXPECT_EQ(array.dims, (std::vector<int64_t>{2, 2, 2}));
  EXPECT_EQ(array.bytes, data);
}

TEST_F(IdxTest, ReadsAHandBuiltGzipFile) {
  const std::vector<uint8_t> data = random_bytes(3 * 7, 3);
  write_gzip_bytes(path("hand.gz"), idx_bytes({3, 7}, data));
  const IdxArray array = read_idx(path("hand.gz"));
  EXPECT_EQ(array.dims, (std::vector<int64_t>{3, 7}));
  EXPECT_EQ(array.bytes, data);
}

TEST_F(IdxTest, ReadsSizesAboveTwoToTheTwentyFour) {
  // A big-endian size with all four bytes set, so a byte-order slip shows.
  write_bytes(path("wide"), idx_bytes({0x01000001}, std::vector<uint8_t>(0x01000001, 7)));
  const IdxArray array = read_idx(path("wide"));
  EXPECT_EQ(array.dims, (std::vector<int64_t>{0x01000001}));
  EXPECT_EQ(array.bytes.size(), 0x01000001u);
}

TEST_F(IdxTest, ReadsPastTheFirstBuffer) {
  // Over 64 MiB: the buffer grows from its first 64 KiB read many times over.
  const size_t n = (size_t{65} << 20) + 17;
  std::vector<uint8_t> data(n);
  for (size_t i = 0; i < n; ++i) data[i] = static_cast<uint8_t>(i * 2654435761u >> 13);
  write_idx(path("big"), {static_cast<int64_t>(n)}, data, /*gzip=*/false);
  const IdxArray array = read_idx(path("big"));
  EXPECT_EQ(array.dims, (std::vector<int64_t>{static_cast<int64_t>(n)}));
  EXPECT_TRUE(array.bytes == data);
}

class IdxRoundTripTest : public testing_support::TempDirTest,
                         public ::testing::WithParamInterface<std::tuple<std::vector<int64_t>, bool>> {};

TEST_P(IdxRoundTripTest, ReadsBackWhatWasWritten) {
  const auto& [dims, gzip] = GetParam();
  size_t n = 1;
  for (const int64_t d : dims) n *= static_cast<size_t>(d);
  const std::vector<uint8_t> data = random_bytes(n, static_cast<uint32_t>(n));
  const std::string file = path(gzip ? "x.gz" : "x");
  write_idx(file, dims, data, gzip);
  const IdxArray array = read_idx(file);
  EXPECT_EQ(array.dims, dims);
  EXPECT_EQ(array.bytes, data);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, IdxRoundTripTest,
    ::testing::Combine(::testing::Values(std::vector<int64_t>{1}, std::vector<int64_t>{17},
                                         std::vector<int64_t>{5, 28, 28}, std::vector<int64_t>{0},
                                         std::vector<int64_t>{3, 0, 5}, std::vector<int64_t>{1, 2, 3, 4, 5},
                                         std::vector<int64_t>{1000, 33}),
                       ::testing::Bool()));

// ---- files that are not what they claim ------------------------------------------

TEST_F(IdxTest, MissingFile) {
  const std::string file = path("nope-idx3-ubyte.gz");
  EXPECT_EQ(data_error_of([&] { read_idx(file); }), file + ": no such file");
}

TEST_F(IdxTest, Directory) {
  const std::string sub = path("sub");
  std::filesystem::create_directory(sub);
  EXPECT_THAT(data_error_of([&] { read_idx(sub); }), AllOf(StartsWith(sub + ": "), HasSubstr("directory")));
}

TEST_F(IdxTest, EmptyFile) {
  write_bytes(path("empty"), {});
  EXPECT_THAT(data_error_of([&] { read_idx(path("empty")); }),
              AllOf(StartsWith(path("empty") + ": "), HasSubstr("truncated"), HasSubstr("0 bytes")));
}

TEST_F(IdxTest, EmptyGzipFile) {
  write_gzip_bytes(path("empty.gz"), {});
  EXPECT_THAT(data_error_of([&] { read_idx(path("empty.gz")); }),
              AllOf(StartsWith(path("empty.gz") + ": "), HasSubstr("truncated")));
}

TEST_F(IdxTest, ShortMagic) {
  write_bytes(path("short"), {0, 0, 8});
  EXPECT_THAT(data_error_of([&] { read_idx(path("short")); }),
              AllOf(StartsWith(path("short") + ": "), HasSubstr("truncated"), HasSubstr("3 bytes")));
}

TEST_F(IdxTest, BadMagicText) {
  write_bytes(path("text"), {'h', 'e', 'l', 'l', 'o', '\n'});
  EXPECT_EQ(data_error_of([&] { read_idx(path("text")); }),
            path("text") +
                ": bad magic 0x68656C6C (expected an IDX file of unsigned bytes, 0x00000801 or 0x00000803)");
}

TEST_F(IdxTest, BadMagicOtherIdxType) {
  write_bytes(path("floats"), idx_bytes({2}, {0, 0, 0, 0, 0, 0, 0, 0}, /*type=*/0x0D));
  EXPECT_THAT(data_error_of([&] { read_idx(path("floats")); }),
              AllOf(StartsWith(path("floats") + ": "), HasSubstr("bad magic 0x00000D01"), HasSubstr("32-bit floats")));
}

TEST_F(IdxTest, BadMagicByteSwapped) {
  write_bytes(path("swapped"), {3, 8, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9});
  EXPECT_THAT(data_error_of([&] { read_idx(path("swapped")); }),
              AllOf(StartsWith(path("swapped") + ": "), HasSubstr("bad magic 0x03080000"), HasSubstr("byte-swapped")));
}

TEST_F(IdxTest, RankZero) {
  write_bytes(path("rank0"), {0, 0, 8, 0, 42});
  EXPECT_THAT(data_error_of([&] { read_idx(path("rank0")); }),
              AllOf(StartsWith(path("rank0") + ": "), HasSubstr("rank 0")));
}

TEST_F(IdxTest, TruncatedSizes) {
  write_bytes(path("sizes"), {0, 0, 8, 3, 0, 0, 0, 5, 0, 0});
  EXPECT_THAT(data_error_of([&] { read_idx(path("sizes")); }),
              AllOf(StartsWith(path("sizes") + ": "), HasSubstr("truncated"), HasSubstr("rank 3"),
                    HasSubstr("file has 6")));
}

TEST_F(IdxTest, TruncatedData) {
  write_bytes(path("cut"), idx_bytes({60000, 28, 28}, random_bytes(123, 4)));
  EXPECT_EQ(data_error_of([&] { read_idx(path("cut")); }),
            path("cut") + ": truncated: header says 60000 x 28 x 28 = 47040000 bytes of data, file has 123");
}

TEST_F(IdxTest, TruncatedDataRankOne) {
  write_bytes(path("cut1"), idx_bytes({10}, random_bytes(9, 5)));
  EXPECT_EQ(data_error_of([&] { read_idx(path("cut1")); }),
            path("cut1") + ": truncated: header says 10 bytes of data, file has 9");
}

TEST_F(IdxTest, TruncatedDataInACompleteGzipStream) {
  write_gzip_bytes(path("cut.gz"), idx_bytes({5, 4, 4}, random_bytes(79, 6)));
  EXPECT_EQ(data_error_of([&] { read_idx(path("cut.gz")); }),
            path("cut.gz") + ": truncated: header says 5 x 4 x 4 = 80 bytes of data, file has 79");
}

TEST_F(IdxTest, CutGzipStream) {
  write_idx(path("whole.gz"), {50, 20, 20}, random_bytes(50 * 20 * 20, 7), /*gzip=*/true);
  std::vector<uint8_t> gz = read_bytes(path("whole.gz"));
  gz.resize(gz.size() / 2);
  write_bytes(path("half.gz"), gz);
  EXPECT_THAT(data_error_of([&] { read_idx(path("half.gz")); }),
              AllOf(StartsWith(path("half.gz") + ": truncated: header says 50 x 20 x 20 = 20000 bytes"),
                    HasSubstr("unexpected end of file")));
}

TEST_F(IdxTest, GzipStreamMissingItsTrailer) {
  write_idx(path("whole.gz"), {10, 10}, random_bytes(100, 8), /*gzip=*/true);
  std::vector<uint8_t> gz = read_bytes(path("whole.gz"));
  gz.erase(gz.end() - 8, gz.end());  // CRC-32 and length
  write_bytes(path("notrailer.gz"), gz);
  EXPECT_THAT(data_error_of([&] { read_idx(path("notrailer.gz")); }),
              AllOf(StartsWith(path("notrailer.gz") + ": "), HasSubstr("truncated gzip stream"),
                    HasSubstr("unexpected end of file")));
}

TEST_F(IdxTest, TrailingData) {
  std::vector<uint8_t> raw = idx_bytes({2, 3}, random_bytes(6, 9));
  raw.insert(raw.end(), {1, 2, 3});
  write_bytes(path("long"), raw);
  EXPECT_THAT(data_error_of([&] { read_idx(path("long")); }),
              AllOf(StartsWith(path("long") + ": trailing data after the 6 bytes"), HasSubstr("(3 more bytes)")));
}

TEST_F(IdxTest, LotsOfTrailingDataInGzip) {
  std::vector<uint8_t> raw = idx_bytes({2, 3}, random_bytes(6, 10));
  raw.resize(raw.size() + 100000, 0);
  write_gzip_bytes(path("long.gz"), raw);
  EXPECT_THAT(data_error_of([&] { read_idx(path("long.gz")); }),
              AllOf(StartsWith(path("long.gz") + ": trailing data"), HasSubstr("at least")));
}

TEST_F(IdxTest, SizesOverflow) {
  write_bytes(path("overflow"), idx_bytes({0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF}, {}));
  EXPECT_THAT(data_error_of([&] { read_idx(path("overflow")); }),
              AllOf(StartsWith(path("overflow") + ": "), HasSubstr("overflows")));
}

TEST_F(IdxTest, AbsurdSizeFailsBeforeAllocating) {
  // 4 GiB: no overflow, but over the limit; a tiny file must not cost a 4 GiB buffer.
  write_bytes(path("huge"), idx_bytes({65536, 65536}, {1, 2, 3}));
  EXPECT_THAT(data_error_of([&] { read_idx(path("huge")); }),
              AllOf(StartsWith(path("huge") + ": header says 65536 x 65536 = 4294967296 bytes"),
                    HasSubstr("2147483648-byte limit")));
}

TEST_F(IdxTest, LyingSizeUnderTheLimitCostsLittleMemory) {
  // An 8-byte header saying 2^31 - 1 bytes follow (under the limit), then 3 bytes: the
  // reader must find the file short without first allocating and zero-filling a big
  // buffer. Fuzzing found the old 64 MiB first read: about a second per such file under
  // ASan (fuzz/corpus/idx/lying-size). Measured in a fresh process (threadsafe death
  // test), whose peak RSS the other tests have not raised.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const std::string lying = path("lying");
  write_bytes(lying, idx_bytes({0x7FFFFFFF}, {1, 2, 3}));
  const auto read_and_exit = [&] {
    rusage before{};
    rusage after{};
    getrusage(RUSAGE_SELF, &before);
    const std::string message = data_error_of([&] { read_idx(lying); });
    getrusage(RUSAGE_SELF, &after);
    const bool reported = message.find("truncated: header says 2147483647") != std::string::npos;
    std::_Exit(reported && after.ru_maxrss - before.ru_maxrss < 16 * 1024 ? 0 : 1);  // KiB
  };
  EXPECT_EXIT(read_and_exit(), ::testing::ExitedWithCode(0), "");
}

TEST_F(IdxTest, CorruptGzipStreamGivesZlibsMessage) {
  // A gzip header, then a deflate block of the reserved type 3.
  write_bytes(path("corrupt.gz"), {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0x07, 0, 0, 0, 0});
  EXPECT_EQ(data_error_of([&] { read_idx(path("corrupt.gz")); }),
            path("corrupt.gz") + ": corrupt gzip stream: invalid block type");
}

TEST_F(IdxTest, GzipChecksumMismatch) {
  write_idx(path("crc.gz"), {10, 10}, random_bytes(100, 11), /*gzip=*/true);
  std::vector<uint8_t> gz = read_bytes(path("crc.gz"));
  gz[gz.size() - 8] ^= 0x01;  // first byte of the CRC-32
  write_bytes(path("crc.gz"), gz);
  EXPECT_EQ(data_error_of([&] { read_idx(path("crc.gz")); }),
            path("crc.gz") + ": corrupt gzip stream: incorrect data check");
}

TEST_F(IdxTest, GzipLengthMismatch) {
  write_idx(path("len.gz"), {10, 10}, random_bytes(100, 12), /*gzip=*/true);
  std::vector<uint8_t> gz = read_bytes(path("len.gz"));
  gz[gz.size() - 4] ^= 0x01;  // first byte of ISIZE
  write_bytes(path("len.gz"), gz);
  EXPECT_EQ(data_error_of([&] { read_idx(path("len.gz")); }),
            path("len.gz") + ": corrupt gzip stream: incorrect length check");
}

TEST_F(IdxTest, CorruptedGzipBodyIsAnError) {
  std::vector<uint8_t> data = random_bytes(900, 13);
  for (auto& b : data) b &= 0x07;  // compressible, so the body is Huffman-coded, not stored
  write_idx(path("body.gz"), {30, 30}, data, /*gzip=*/true);
  const std::vector<uint8_t> good = read_bytes(path("body.gz"));
  // Whatever a flipped byte does to the deflate stream, the CRC-32 catches it.
  for (size_t at = 10; at + 8 < good.size(); at += 37) {
    std::vector<uint8_t> bad = good;
    bad[at] ^= 0x5A;
    write_bytes(path("body.gz"), bad);
    EXPECT_THAT(data_error_of([&] { read_idx(path("body.gz")); }), StartsWith(path("body.gz") + ": "))
        << "flipped byte " << at;
  }
}

// ---- write_idx refuses what it cannot write ---------------------------------------

TEST_F(IdxTest, WriteRejectsSizeMismatch) {
  EXPECT_THAT(data_error_of([&] { write_idx(path("w"), {2, 3}, random_bytes(5, 14), false); }),
              AllOf(StartsWith(path("w") + ": "), HasSubstr("2 x 3"), HasSubstr("5 bytes")));
}

TEST_F(IdxTest, WriteRejectsBadDims) {
  EXPECT_THAT(data_error_of([&] { write_idx(path("w"), {}, {}, false); }),
              AllOf(StartsWith(path("w") + ": "), HasSubstr("rank 0")));
  EXPECT_THAT(data_error_of([&] { write_idx(path("w"), std::vector<int64_t>(256, 1), {1}, false); }),
              HasSubstr("rank 256"));
  EXPECT_THAT(data_error_of([&] { write_idx(path("w"), {-1}, {}, false); }), HasSubstr("-1"));
  EXPECT_THAT(data_error_of([&] { write_idx(path("w"), {int64_t{1} << 32, 0}, {}, false); }),
              HasSubstr("4294967296"));
}

TEST_F(IdxTest, WriteIntoMissingDirectory) {
  const std::string file = path("no/such/dir/x.gz");
  EXPECT_THAT(data_error_of([&] { write_idx(file, {1}, {1}, true); }),
              AllOf(StartsWith(file + ": cannot open for writing"), HasSubstr("No such file")));
}

}  // namespace
}  // namespace bnorm::data
