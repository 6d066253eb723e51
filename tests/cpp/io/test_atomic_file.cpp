// src/io: files that arrive whole, and the output path rules (the CLI tests cover the
// rules end to end; these pin the library's contract, including the failure paths).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "io/atomic_file.h"
#include "io/output_paths.h"

namespace fs = std::filesystem;
using bnorm::io::check_distinct;
using bnorm::io::check_output;
using bnorm::io::FileError;
using bnorm::io::OutputKind;
using bnorm::io::PathError;

namespace {

class IoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("bnorm_io_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  static std::string read(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
  }
  static void write(const std::string& p, const std::string& text) {
    std::ofstream(p, std::ios::binary) << text;
  }
  size_t entries() const {
    return static_cast<size_t>(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()));
  }
  fs::path dir_;
};

template <class E, class F>
std::string message_of(F f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  ADD_FAILURE() << "no exception";
  return "";
}

TEST_F(IoTest, WritesAndReplacesWholeFilesWithoutLeavingTemporaries) {
  const std::string p = path("out.bin");
  bnorm::io::write_file_atomically(p, std::string("first\0with a zero", 17));
  EXPECT_EQ(read(p), std::string("first\0with a zero", 17));
  bnorm::io::write_file_atomically(p, "second");
  EXPECT_EQ(read(p), "second");
  bnorm::io::write_file_atomically(p, "");
  EXPECT_EQ(read(p), "");
  EXPECT_EQ(entries(), 1u);
}

TEST_F(IoTest, AFailedRenameLeavesWhatWasThereAndNoTemporary) {
  const std::string p = path("taken");
  fs::create_directory(p);
  write(p + "/inside", "kept");
  const std::string what = message_of<FileError>([&] { bnorm::io::write_file_atomically(p, "x"); });
  EXPECT_NE(what.find(p), std::string::npos) << what;
  EXPECT_NE(what.find("rename"), std::string::npos) << what;
  EXPECT_EQ(read(p + "/inside"), "kept");
  EXPECT_EQ(entries(), 1u);  // the directory alone: the temporary was removed
}

TEST_F(IoTest, AMissingDirectoryIsAnErrorNamingThePath) {
  const std::string p = path("no/such/dir/out");
  const std::string what = message_of<FileError>([&] { bnorm::io::write_file_atomically(p, "x"); });
  EXPECT_EQ(what.rfind(p, 0), 0u) << what;
}

TEST_F(IoTest, ALinkAtTheTemporarysNameIsNotWrittenThrough) {
  const std::string p = path("out"), victim = path("victim");
  write(victim, "precious");
  fs::create_symlink(victim, bnorm::io::temporary_path(p, static_cast<long>(::getpid())));
  bnorm::io::write_file_atomically(p, "new");
  EXPECT_EQ(read(victim), "precious");
  EXPECT_EQ(read(p), "new");
}

TEST_F(IoTest, StaleTemporariesOfDeadProcessesAreRemovedLiveOnesKept) {
  const std::string p = path("c.ckpt");
  write(p, "checkpoint");
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ASSERT_GT(child, 0);
  int status = 0;
  ::waitpid(child, &status, 0);  // reaped: its pid names no process now
  const std::string dead = bnorm::io::temporary_path(p, child);
  const std::string live = bnorm::io::temporary_path(p, ::getppid());
  write(dead, "half");
  write(live, "being written");
  write(p + ".tmp.12ab", "not ours");
  write(path("other.ckpt.tmp.1"), "another file's");
  fs::create_directory(bnorm::io::temporary_path(p, 2147483));  // a directory is never removed
  EXPECT_EQ(bnorm::io::remove_stale_temporaries(p), 1);
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_TRUE(fs::exists(live) && fs::exists(p + ".tmp.12ab") && fs::exists(path("other.ckpt.tmp.1")));
  EXPECT_EQ(read(p), "checkpoint");
  // A file the run reads or writes is kept whatever its name, and so is a link to one.
  write(dead, "the checkpoint to resume from");
  fs::create_symlink(p, bnorm::io::temporary_path(p, 2147482));
  EXPECT_EQ(bnorm::io::remove_stale_temporaries(p, {dead, p}), 0);
  EXPECT_TRUE(fs::exists(dead) && fs::is_symlink(bnorm::io::temporary_path(p, 2147482)));
}

TEST_F(IoTest, OutputRulesByKind) {
  const std::string ckpt = path("a.ckpt"), metrics = path("m.jsonl"), notes = path("notes");
  write(ckpt, "BNORMCKP...");
  write(metrics, "{\"model\": \"lenet\", \"epoch\": 1}\n");
  write(notes, "mine");
  EXPECT_NO_THROW(check_output({"--checkpoint", ckpt}, OutputKind::checkpoint, false));
  EXPECT_NO_THROW(check_output({"--metrics", metrics}, OutputKind::metrics, false));
  EXPECT_NO_THROW(check_output({"--checkpoint", path("new")}, OutputKind::checkpoint, false));
  EXPECT_THROW(check_output({"--checkpoint", metrics}, OutputKind::checkpoint, false), PathError);
  EXPECT_THROW(check_output({"--metrics", ckpt}, OutputKind::metrics, false), PathError);
  const std::string what =
      message_of<PathError>([&] { check_output({"--metrics", notes}, OutputKind::metrics, false); });
  EXPECT_EQ(what.rfind("--metrics " + notes + ": ", 0), 0u) << what;
  EXPECT_NO_THROW(check_output({"--metrics", notes}, OutputKind::metrics, true));
  fs::create_symlink(ckpt, path("link"));
  EXPECT_THROW(check_output({"--checkpoint", path("link")}, OutputKind::checkpoint, true), PathError);
  EXPECT_THROW(check_output({"--checkpoint", dir_.string()}, OutputKind::checkpoint, true),
               PathError);
  EXPECT_THROW(check_output({"--checkpoint", path("d/")}, OutputKind::checkpoint, true), PathError);
  EXPECT_THROW(check_output({"--checkpoint", ""}, OutputKind::checkpoint, true), PathError);
}

TEST_F(IoTest, DistinctFilesByIdentityNotSpelling) {
  const std::string a = path("a"), b = path("b");
  write(a, "x");
  fs::create_hard_link(a, b);
  fs::create_directory(path("sub"));
  EXPECT_THROW(check_distinct({}, {{"--metrics", a}, {"--checkpoint", b}}), PathError);
  EXPECT_THROW(check_distinct({}, {{"--metrics", path("new")}, {"--checkpoint", path("sub/../new")}}),
               PathError);
  EXPECT_THROW(check_distinct({{"--resume", a}}, {{"--metrics", b}}), PathError);
  EXPECT_NO_THROW(check_distinct({{"--resume", a}}, {{"--checkpoint", b}},
                                 {{"--checkpoint", "--resume"}}));
  EXPECT_THROW(check_distinct({{"--resume", a}}, {{"--metrics", b}}, {{"--checkpoint", "--resume"}}),
               PathError);
  EXPECT_NO_THROW(check_distinct({{"--resume", a}}, {{"--metrics", path("m")}, {"--checkpoint", path("c")}}));
}

}  // namespace
