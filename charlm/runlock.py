"""One trainer per output directory: a lock file that a crashed run does not leave stuck.

The lock holds the owner's PID and process start time; a lock whose process is gone (or
whose PID now belongs to a different process) is stale and is taken over.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import TrainingError


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), or None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    now = _start_time(pid)
    return started is None or now is None or now == started


class RunLock:
    """``with RunLock(out_dir):`` holds ``out_dir/.lock`` for the life of a training run."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / ".lock"

    def __enter__(self):
        me = f"{os.getpid()} {_start_time(os.getpid()) or '-'}\n"
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and owner[0] != os.getpid() and _alive(*owner):
                    raise TrainingError(
                        f"{self.path.parent}: another charlm train (pid {owner[0]}) is using this output "
                        "directory; wait for it to finish or write to another {out_dir}", out_dir=None
                    ) from None
                try:  # stale: left by a run that crashed or was killed
                    self.path.unlink()
                except FileNotFoundError:
                    pass
                continue
            except OSError as e:
                raise TrainingError(f"{self.path.parent}: cannot write to the output directory ({e.strerror})") from None
            with os.fdopen(fd, "w") as f:
                f.write(me)
            return self
        raise TrainingError(f"{self.path}: could not take the run lock")

    def _owner(self) -> tuple[int, str | None] | None:
        try:
            parts = self.path.read_text().split()
            return int(parts[0]), (parts[1] if len(parts) > 1 and parts[1] != "-" else None)
        except (OSError, ValueError, IndexError):
            return None  # unreadable or half-written: treat as stale

    def __exit__(self, *exc):
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
