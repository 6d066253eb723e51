#include "io/output_paths.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string_view>

namespace bnorm::io {
namespace {

namespace fs = std::filesystem;

[[noreturn]] void refuse(const NamedPath& p, const std::string& why) {
  throw PathError(p.option + " " + p.path + ": " + why);
}

const char* type_name(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISLNK(mode)) return "a symbolic link";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

// The first `limit` bytes of a file (fewer when it is shorter).
std::string head_of(const std::string& path, size_t limit) {
  std::ifstream in(path, std::ios::binary);
  std::string head(limit, '\0');
  in.read(head.data(), static_cast<std::streamsize>(limit));
  head.resize(static_cast<size_t>(in.gcount()));
  return head;
}

bool looks_like(OutputKind kind, const std::string& head) {
  if (head.empty()) return true;
  switch (kind) {
    case OutputKind::checkpoint:
      return head.rfind("BNORMCKP", 0) == 0;
    case OutputKind::metrics: {
      // Its first line is one of ours.
      const std::string_view first = std::string_view(head).substr(0, head.find('\n'));
      return first.rfind("{\"model\": \"", 0) == 0 && first.find("\"epoch\": ") != first.npos;
    }
    case OutputKind::bench_json:
      return head.rfind("{\"unit\": ", 0) == 0;
    case OutputKind::npy:
      return head.rfind("\x93NUMPY", 0) == 0;
    case OutputKind::onnx:
      return head[0] == '\x08';
  }
  return false;
}

const char* kind_name(OutputKind kind) {
  switch (kind) {
    case OutputKind::checkpoint: return "a bnorm checkpoint";
    case OutputKind::metrics: return "bnorm metrics (JSON lines from `bnorm train`)";
    case OutputKind::bench_json: return "a bnorm kernel table (JSON)";
    case OutputKind::npy: return "a NumPy array (.npy)";
    case OutputKind::onnx: return "an ONNX model";
  }
  return "";
}

// Identity of a path: (device, inode) when it exists, else its normalized absolute path.
struct Identity {
  bool exists = false;
  dev_t dev = 0;
  ino_t ino = 0;
  fs::path normal;
  bool operator==(const Identity& o) const {
    if (exists && o.exists) return dev == o.dev && ino == o.ino;
    return normal == o.normal;
  }
};

Identity identity_of(const std::string& path) {
  Identity id;
  std::error_code ec;
  id.normal = fs::weakly_canonical(fs::absolute(path, ec), ec);
  if (ec) id.normal = fs::absolute(path, ec).lexically_normal();
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) id.exists = true, id.dev = st.st_dev, id.ino = st.st_ino;
  return id;
}

}  // namespace

void check_output(const NamedPath& output, OutputKind kind, bool force) {
  if (output.path.empty()) refuse(output, "the path is empty");
  if (output.path.back() == '/') refuse(output, "names a directory; expected a file path");
  struct stat st {};
  if (::lstat(output.path.c_str(), &st) == 0) {
    if (!S_ISREG(st.st_mode))
      refuse(output, std::string("is ") + type_name(st.st_mode) +
                         "; bnorm writes a new file and renames it into place, which would "
                         "replace it: give the path of a regular file (or a new one)");
    if (!force && ::access(output.path.c_str(), R_OK) != 0)
      refuse(output, "exists and cannot be read to check what it holds; refusing to replace it");
    if (!force && !looks_like(kind, head_of(output.path, 4096)))
      refuse(output, std::string("exists and is not ") + kind_name(kind) +
                         "; refusing to replace it" +
                         (kind == OutputKind::bench_json ? "" : " (--force replaces it anyway)"));
  } else if (errno != ENOENT) {
    refuse(output, std::string("cannot be examined: ") + std::strerror(errno));
  }
  std::error_code ec;
  fs::path dir = fs::absolute(output.path, ec).parent_path();
  struct stat dir_st {};
  if (::stat(dir.c_str(), &dir_st) != 0 || !S_ISDIR(dir_st.st_mode))
    refuse(output, "its directory " + dir.string() + " does not exist");
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    refuse(output, "cannot write in " + dir.string());
}

void check_distinct(const std::vector<NamedPath>& inputs, const std::vector<NamedPath>& outputs,
                    const std::vector<std::pair<std::string, std::string>>& allowed) {
  std::vector<Identity> out_ids;
  for (const auto& o : outputs) out_ids.push_back(identity_of(o.path));
  for (size_t i = 0; i < outputs.size(); ++i) {
    for (size_t j = 0; j < i; ++j)
      if (out_ids[i] == out_ids[j])
        refuse(outputs[i], "is the same file as " + outputs[j].option + " " + outputs[j].path +
                               "; each output needs its own file");
    for (const auto& in : inputs) {
      if (!(out_ids[i] == identity_of(in.path))) continue;
      const bool ok = std::find(allowed.begin(), allowed.end(),
                                std::make_pair(outputs[i].option, in.option)) != allowed.end();
      if (!ok)
        refuse(outputs[i], "is the same file as the input " + in.option + " " + in.path +
                               "; writing it would destroy that input");
    }
  }
}

}  // namespace bnorm::io
