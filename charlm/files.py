"""Writing files so that a crash never leaves half of one: a temporary file beside the target,
fsync, rename, fsync the directory. A reader sees the old file or the new one, never a mix.

Files are created with mode 0666 minus the umask, like every other file the user writes
(``tempfile.mkstemp`` would make them 0600).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def temporary_name(path: Path) -> Path:
    """``.NAME.<random>.tmp`` beside ``path``: hidden, and found by ``remove_stale_temporaries``."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def atomic_write(path, write: Callable[[BinaryIO], None]) -> None:
    path = Path(path)
    tmp = temporary_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def atomic_write_text(path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)


def open_to_read(path) -> BinaryIO:
    """``path`` opened for reading, without blocking: a file that would block a read (a FIFO, or a
    /proc file such as kmsg, which looks like an empty regular file) raises ``OSError`` (EAGAIN)
    at its first read instead of hanging; a regular file reads as always."""
    return os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb")


def remove_stale_temporaries(d: Path, pattern: str = ".*.tmp") -> None:
    """Temporaries of a process that was killed while writing (see ``atomic_write``)."""
    for p in Path(d).glob(pattern):
        try:
            p.unlink()
        except OSError:
            pass
