"""Files the project's Python scripts write arrive whole (as src/io/atomic_file.h does it
in C++): the bytes go to "<path>.tmp.<pid>" (a stale file or a link planted at that name
is removed first, never written through), are fsynced, renamed over <path>, and the
directory is fsynced. A crash leaves the old file or the new one, never half of one.
Used by the benchmark scripts and tools/experiment_report.py."""
import os


def write_bytes_atomically(path, data):
    path = os.fspath(path)
    tmp = f"{path}.tmp.{os.getpid()}"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomically(path, text):
    write_bytes_atomically(path, text.encode())
