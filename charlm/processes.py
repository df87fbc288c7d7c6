"""Other processes, as /proc shows them (Linux): whether one still runs, and whether any maps a
file. The run lock asks whether its owner is alive; a worker asks whether its launcher is."""

from __future__ import annotations

import os
from pathlib import Path


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, or None if unknown."""
    fields = _stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def alive(pid: int, started: str | None) -> bool:
    """Whether process ``pid`` runs and is the one that started at ``started`` (a PID is reused
    once its process is gone; None: any process with that PID counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    fields = _stat(pid)
    if fields and fields[0] in ("Z", "X"):  # exited, not yet reaped by its parent
        return False
    now = start_time(pid)
    return started is None or now is None or now == started


def identity(pid: int | None = None) -> str:
    """'PID START' of a process (this one by default): what ``alive`` checks later."""
    pid = os.getpid() if pid is None else pid
    return f"{pid} {start_time(pid) or '-'}"


def parse_identity(text: str) -> tuple[int, str | None] | None:
    parts = text.split()
    try:
        return int(parts[0]), (parts[1] if len(parts) > 1 and parts[1] != "-" else None)
    except (ValueError, IndexError):
        return None


def in_use(path: Path) -> bool:
    """Whether any process this one can inspect has ``path`` open or mapped (/proc/PID/fd, maps)."""
    needle = str(path)
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if needle in (proc / "maps").read_text(errors="replace"):
                return True
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) == needle:
                    return True
        except OSError:
            continue
    return False
