#include "io/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

namespace bnorm::io {
namespace {

std::string errno_text() { return std::strerror(errno); }

std::filesystem::path directory_of(const std::string& path) {
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  return dir.empty() ? std::filesystem::path(".") : dir;
}

// Writes all of `bytes` to fd, retrying short writes and EINTR.
bool write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Makes a rename in `dir` durable: without it a power cut after rename() may bring the
// old directory entry back.
bool fsync_directory(const std::filesystem::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

// True when process `pid` may still be running (kill(pid, 0) succeeds, or fails for a
// reason other than "no such process", e.g. another user's process).
bool process_may_run(long pid) {
  if (pid <= 0 || pid > 0x3fffffff) return false;
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH;
}

}  // namespace

std::string temporary_path(const std::string& path, long pid) {
  return path + ".tmp." + std::to_string(pid);
}

void write_file_atomically(const std::string& path, std::string_view bytes) {
  const std::string tmp = temporary_path(path, static_cast<long>(::getpid()));
  // O_EXCL: never write through something already at the temporary's name (a link
  // planted there, or a stale file of a recycled pid, which is removed first).
  ::unlink(tmp.c_str());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0) throw FileError(path + ": cannot create the temporary " + tmp + ": " + errno_text());
  bool ok = write_all(fd, bytes) && ::fsync(fd) == 0;
  std::string why = ok ? "" : errno_text();
  if (::close(fd) != 0 && ok) ok = false, why = errno_text();
  if (!ok) {
    ::unlink(tmp.c_str());
    throw FileError(path + ": writing " + tmp + " failed: " + why);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    why = errno_text();
    ::unlink(tmp.c_str());
    throw FileError(path + ": cannot rename the temporary file into place: " + why);
  }
  if (!fsync_directory(directory_of(path)))
    throw FileError(path + ": written, but syncing its directory failed: " + errno_text());
}

int remove_stale_temporaries(const std::string& path, const std::vector<std::string>& keep) {
  std::vector<std::pair<dev_t, ino_t>> kept;
  for (const std::string& k : keep) {
    struct stat st {};
    if (!k.empty() && ::stat(k.c_str(), &st) == 0) kept.emplace_back(st.st_dev, st.st_ino);
  }
  const std::string prefix = std::filesystem::path(path).filename().string() + ".tmp.";
  std::error_code ec;
  int removed = 0;
  for (const auto& entry : std::filesystem::directory_iterator(directory_of(path), ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string digits = name.substr(prefix.size());
    if (digits.size() > 10 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    const long pid = std::stol(digits);
    if (process_may_run(pid) && pid != static_cast<long>(::getpid())) continue;
    // The entry itself, or what it links to, is one of `keep`.
    const auto is_kept = [&](int (*stat_fn)(const char*, struct stat*)) {
      struct stat st {};
      return stat_fn(entry.path().c_str(), &st) == 0 &&
             std::find(kept.begin(), kept.end(), std::make_pair(st.st_dev, st.st_ino)) != kept.end();
    };
    if (is_kept(::lstat) || is_kept(::stat)) continue;
    // Only files and links (removing a link leaves its target alone), never a directory.
    std::error_code remove_ec;
    const auto type = entry.symlink_status(remove_ec).type();
    if ((type == std::filesystem::file_type::regular ||
         type == std::filesystem::file_type::symlink) &&
        std::filesystem::remove(entry.path(), remove_ec))
      ++removed;
  }
  return removed;
}

}  // namespace bnorm::io
