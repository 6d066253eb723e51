// The checkpoint format: round trip, and a clear error for every kind of damage or
// mismatch, with the model left untouched.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "nn/checkpoint.h"
#include "nn/batch_norm_layer.h"
#include "nn/trainer.h"
#include "synthetic_data.h"

namespace bnorm::nn {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class CheckpointFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("bnorm_ckpt_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
    path_ = (dir_ / "model.ckpt").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::vector<uint8_t> bytes() const {
    std::ifstream in(path_, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }
  void write_bytes(const std::vector<uint8_t>& b) const {
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  }
  std::string read_error() const {
    try {
      read_checkpoint(path_);
    } catch (const CheckpointError& e) {
      return e.what();
    }
    return "(no error)";
  }

  static Trainer trained(const std::string& model = "lenet-bn") {
    TrainOptions o;
    o.model = model;
    o.batch_size = 32;
    o.sgd = {0.1, 0.9, 0.0};
    Trainer t(o);
    t.train_epoch(testing::synthetic_images(64, 11), nullptr);
    return t;
  }
  static std::vector<float> weights(Trainer& t) {
    std::vector<float> out;
    for (const auto& p : t.model().state().parameters) out.insert(out.end(), p.value.begin(), p.value.end());
    return out;
  }

  fs::path dir_;
  std::string path_;
};

TEST_F(CheckpointFile, RoundTripKeepsEverything) {
  Trainer t = trained();
  t.save(path_);
  EXPECT_FALSE(fs::exists(path_ + ".tmp." + std::to_string(::getpid())));
  const Checkpoint c = read_checkpoint(path_);
  EXPECT_EQ(c.meta.at("model"), "lenet-bn");
  EXPECT_EQ(c.meta.at("epoch"), "1");
  EXPECT_EQ(c.meta.at("dtype"), "float32");
  ASSERT_NE(c.find("model.1.running_var"), nullptr);
  ASSERT_NE(c.find("model.1.num_batches_tracked"), nullptr);
  ASSERT_NE(c.find("optimizer.momentum_buffer.0.weight"), nullptr);
  EXPECT_EQ(c.find("model.0.weight")->sizes, (std::vector<int64_t>{6, 1, 5, 5}));

  Trainer u(Trainer::options_from(c, path_));
  u.restore(c, path_);
  EXPECT_EQ(u.epochs_done(), 1);
  EXPECT_EQ(weights(t), weights(u));
  auto& bn_t = dynamic_cast<BatchNormLayer<float>&>(t.model().layer(1)).module();
  auto& bn_u = dynamic_cast<BatchNormLayer<float>&>(u.model().layer(1)).module();
  EXPECT_EQ(bn_u.num_batches_tracked(), bn_t.num_batches_tracked());
  EXPECT_EQ(bn_u.num_batches_tracked(), 2);
  EXPECT_TRUE(std::equal(bn_t.running_var().begin(), bn_t.running_var().end(),
                         bn_u.running_var().begin()));
}

TEST_F(CheckpointFile, MissingFile) {
  EXPECT_THAT(read_error(), HasSubstr("no such checkpoint file"));
}

TEST_F(CheckpointFile, NotACheckpoint) {
  write_bytes({'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd', '!', '!'});
  EXPECT_THAT(read_error(), HasSubstr("not a bnorm checkpoint"));
  EXPECT_THAT(read_error(), HasSubstr(path_));
}

TEST_F(CheckpointFile, EveryFlippedByteIsCaught) {
  trained().save(path_);
  const std::vector<uint8_t> good = bytes();
  // Flip one byte at a spread of positions past the magic: each must be an error.
  for (size_t at = 8; at < good.size(); at += good.size() / 97 + 1) {
    std::vector<uint8_t> bad = good;
    bad[at] ^= 0x5a;
    write_bytes(bad);
    const std::string e = read_error();
    EXPECT_NE(e, "(no error)") << "byte " << at;
    EXPECT_THAT(e, HasSubstr(path_));
  }
}

TEST_F(CheckpointFile, TruncatedFile) {
  trained().save(path_);
  std::vector<uint8_t> b = bytes();
  b.resize(b.size() / 2);
  write_bytes(b);
  EXPECT_THAT(read_error(), HasSubstr("damaged or truncated"));
}

TEST_F(CheckpointFile, NewerVersion) {
  trained().save(path_);
  std::vector<uint8_t> b = bytes();
  b[8] = 9;  // version, little-endian u32 after the magic
  write_bytes(b);
  EXPECT_THAT(read_error(), HasSubstr("format version 9"));
}

TEST_F(CheckpointFile, OtherModelIsRejectedAndNothingChanges) {
  trained("lenet").save(path_);
  const Checkpoint c = read_checkpoint(path_);
  Trainer t = trained("lenet-bn");
  const std::vector<float> before = weights(t);
  try {
    t.restore(c, path_);
    FAIL() << "restore accepted another model";
  } catch (const CheckpointError& e) {
    EXPECT_THAT(std::string(e.what()), HasSubstr("holds model 'lenet'"));
  }
  EXPECT_EQ(weights(t), before);
  EXPECT_EQ(t.epochs_done(), 1);
}

TEST_F(CheckpointFile, ShapeMismatchIsRejectedAndNothingChanges) {
  Trainer t = trained();
  Checkpoint c = t.to_checkpoint();
  for (auto& tensor : c.tensors)
    if (tensor.name == "model.12.weight") {  // Linear(120, 84) -> pretend (84, 120) is (42, 240)
      tensor.sizes = {42, 240};
    }
  write_checkpoint(path_, c);  // a valid file, with a shape that does not fit
  const Checkpoint loaded = read_checkpoint(path_);
  Trainer u = trained();
  u.model().state().parameters[0].value[0] = 42.0f;  // a marker that must survive
  const std::vector<float> before = weights(u);
  try {
    u.restore(loaded, path_);
    FAIL() << "restore accepted a wrong shape";
  } catch (const CheckpointError& e) {
    EXPECT_THAT(std::string(e.what()), HasSubstr("model.12.weight"));
    EXPECT_THAT(std::string(e.what()), HasSubstr("(42, 240)"));
    EXPECT_THAT(std::string(e.what()), HasSubstr("(84, 120)"));
  }
  EXPECT_EQ(weights(u), before);
}

TEST_F(CheckpointFile, MissingAndExtraTensors) {
  Trainer t = trained();
  Checkpoint c = t.to_checkpoint();
  c.tensors.push_back({"model.99.weight", DType::float32, {1}, std::vector<uint8_t>(4, 0)});
  EXPECT_THROW(t.restore(c, "extra"), CheckpointError);
  c.tensors.pop_back();
  c.tensors.erase(c.tensors.begin());
  try {
    t.restore(c, "missing");
    FAIL();
  } catch (const CheckpointError& e) {
    EXPECT_THAT(std::string(e.what()), HasSubstr("missing tensor model.0.weight"));
  }
}

TEST_F(CheckpointFile, UnwritableDirectoryIsAnError) {
  Trainer t = trained();
  EXPECT_THROW(t.save((dir_ / "no" / "such" / "dir" / "x.ckpt").string()), CheckpointError);
}

TEST_F(CheckpointFile, RewriteReplacesAtomically) {
  Trainer t = trained();
  t.save(path_);
  t.train_epoch(testing::synthetic_images(64, 12), nullptr);
  t.save(path_);
  EXPECT_EQ(read_checkpoint(path_).meta.at("epoch"), "2");
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir_)) files += e.is_regular_file() ? 1 : 0;
  EXPECT_EQ(files, 1u);  // no temporary left behind
}

}  // namespace
}  // namespace bnorm::nn

namespace bnorm::nn {
namespace {

TEST_F(CheckpointFile, DuplicateTensorNamesAreRejected) {
  Trainer t = trained();
  Checkpoint c = t.to_checkpoint();
  c.tensors.push_back(c.tensors.front());  // a valid file that names a tensor twice
  write_checkpoint(path_, c);
  EXPECT_THAT(read_error(), HasSubstr("tensor model.0.weight appears twice"));
}

}  // namespace
}  // namespace bnorm::nn
