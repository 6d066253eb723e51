"""Files the benchmark scripts write arrive whole (as src/io/atomic_file.h does it in
C++): the text goes to "<path>.tmp.<pid>", is fsynced, renamed over <path>, and the
directory is fsynced. A crash leaves the old file or the new one, never half of one."""
import os


def open_temporary(path, mode="w"):
    """A new "<path>.tmp.<pid>" (a stale one or a link planted at that name is removed
    first, never written through); returns (its name, the open file)."""
    tmp = f"{os.fspath(path)}.tmp.{os.getpid()}"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    return tmp, os.fdopen(fd, mode)


def install(tmp, f, path):
    """Flushes, fsyncs and closes f, renames tmp over path, fsyncs the directory; on any
    failure removes tmp and re-raises (the old file at path is intact)."""
    try:
        with f:
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
    tmp, f = open_temporary(path)
    try:
        f.write(text)
    except BaseException:
        f.close()
        os.unlink(tmp)
        raise
    install(tmp, f, path)
