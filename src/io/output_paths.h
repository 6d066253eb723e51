// The rules for the paths a command writes, checked before any work starts, so that a
// bad path costs nothing and destroys nothing (docs/failure.md):
//  - an output is either absent, in an existing directory the process can write in,
//    or a regular file; a directory, symbolic link, device, FIFO or socket is refused,
//    because the rename that installs the new file would replace the entry itself;
//  - an existing regular file is replaced only if it holds what this output writes
//    (a bnorm checkpoint, bnorm metrics lines, a bnorm benchmark JSON, a NumPy array,
//    an ONNX model) or is empty;
//    anything else needs `force`;
//  - no output is the same file as another output or as an input (same device and
//    inode, or the same normalized absolute path for files not there yet), except
//    the pairs the caller allows (a checkpoint resumed and saved in place).
#pragma once

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace bnorm::io {

// A path refused by these rules; the message names the option and the path.
class PathError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// What an existing file must look like to be replaced without `force`.
enum class OutputKind {
  checkpoint,  // starts with the checkpoint magic "BNORMCKP"
  metrics,     // lines of {"model": ..., "epoch": ...} objects, as `bnorm train` writes
  bench_json,  // the kernel table's {"unit": ...} object
  npy,         // a NumPy array file: magic "\x93NUMPY"
  onnx,        // an ONNX model: a protobuf ModelProto, whose first field is ir_version (0x08)
};

struct NamedPath {
  std::string option;  // "--checkpoint", as the user typed it
  std::string path;
};

void check_output(const NamedPath& output, OutputKind kind, bool force);

// `allowed` lists (output option, input option) pairs that may name the same file.
void check_distinct(const std::vector<NamedPath>& inputs, const std::vector<NamedPath>& outputs,
                    const std::vector<std::pair<std::string, std::string>>& allowed = {});

}  // namespace bnorm::io
