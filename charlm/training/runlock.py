"""One trainer per output directory: a lock file that a crashed run does not leave stuck.

The lock holds the owner's PID and process start time; a lock whose process is gone (or
whose PID now belongs to a different process) is stale and is taken over.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import TrainingError
from ..processes import alive, identity, parse_identity


class RunLock:
    """``with RunLock(out_dir):`` holds ``out_dir/.lock`` for the life of a training run."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / ".lock"

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()

    def acquire(self) -> RunLock:
        me = identity() + "\n"
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and owner[0] != os.getpid() and alive(*owner):
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
            return parse_identity(self.path.read_text())  # None: half-written, so stale
        except OSError:
            return None  # unreadable: treat as stale

    def release(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
