"""Files the benchmark scripts write arrive whole (as src/io/atomic_file.h does it in
C++): the text goes to "<path>.tmp.<pid>", is fsynced, renamed over <path>, and the
directory is fsynced. A crash leaves the old file or the new one, never half of one."""
import os


def write_text_atomically(path, text):
    path = os.fspath(path)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
