// Files that arrive whole. Every file bnorm writes (checkpoints, metrics, benchmark
// JSON) goes through write_file_atomically: the bytes go to "<path>.tmp.<pid>", which
// is flushed and fsynced, renamed over <path>, and then the directory is fsynced so the
// rename itself survives a power cut. A crash at any moment leaves either the old file
// or the new one at <path>, never a mix, and at worst a "<path>.tmp.<pid>" beside it,
// which remove_stale_temporaries() deletes once that process is gone.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace bnorm::io {

// An I/O failure; the message starts with the path it is about.
class FileError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// "<path>.tmp.<pid>": the temporary a write by process `pid` uses.
std::string temporary_path(const std::string& path, long pid);

// Writes `bytes` to `path` as described above. Throws FileError naming `path` (and
// removes its temporary) when any step fails; the old file at `path` is then intact.
void write_file_atomically(const std::string& path, std::string_view bytes);

// Deletes every "<path>.tmp.<N>" in path's directory whose process N no longer runs
// (a write interrupted by a crash or kill -9). Temporaries of live processes are left
// alone: one may be writing right now; so is any file that is one of `keep` (a run's
// own inputs and outputs, whatever their names). Returns how many were deleted.
int remove_stale_temporaries(const std::string& path, const std::vector<std::string>& keep = {});

}  // namespace bnorm::io
