"""``charlm train --workers N``: run the same command as N MPI ranks on this machine.

``charlm[mpi]`` installs mpi4py and the mpich wheel, which puts ``mpiexec`` beside the Python
executable. ``launch`` starts ``mpiexec -n N python -m charlm ARGS`` with one BLAS thread per
rank (N ranks on N cores; more threads each would oversubscribe them), relays what the ranks
print, and

- passes Ctrl-C (SIGINT or SIGTERM to this process) to mpiexec once, which passes it to every
  rank: they stop after the current step and rank 0 writes last.npz. A second Ctrl-C ends them
  at once (checkpoints are written atomically, so the last one stays whole);
- turns MPI's multi-line report of a rank that died (killed, out of memory) into one line;
  mpiexec has already ended the other ranks.

mpiexec runs in a session of its own, so a terminal's Ctrl-C reaches it only through here (it
would take two as a forced abort).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from .errors import CharlmError
from .threads import THREAD_VARIABLES

# What MPICH's mpiexec (hydra) prints of its own: its banner for a rank that died, and its notes.
_MPI_LINE = re.compile(r"=+|=\s.*|YOUR APPLICATION TERMINATED WITH THE EXIT STRING.*|This typically refers to a "
                       r"problem with your application\.|Please see the FAQ page.*|\[(mpiexec|proxy:)[^\]]*\].*")
_DIED = re.compile(r"EXIT STRING: (.*?) \(signal (\d+)\)")


def mpi_launcher() -> str:
    """The mpiexec that came with charlm[mpi] (or another on PATH); ``CharlmError`` without one."""
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.is_file() else shutil.which("mpiexec")
    if found is None or importlib.util.find_spec("mpi4py") is None:
        raise CharlmError("--workers needs MPI: pip install 'charlm[mpi]' (mpi4py and the mpich wheel, "
                          "which brings mpiexec)")
    return found


def launch(workers: int, args: list[str]) -> int:
    """Run ``charlm ARGS`` as ``workers`` ranks; their exit status (1 when one died)."""
    cmd = [mpi_launcher(), "-n", str(workers), sys.executable, "-m", "charlm", *args]
    # One BLAS thread per rank even where the shell sets more: N ranks with 2 threads each on N
    # cores measured 69x slower a step (LSTM 1x128: 907 ms against 13 ms), the threads spinning
    # against each other and MPI's polling.
    env = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, "1"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True, errors="replace",
                            start_new_session=True)

    def forward(signum, frame):
        proc.send_signal(signal.SIGINT)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        died = _relay(proc.stdout)
        code = proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if died:
        what, signum = died
        print(f"Error: a worker ended with signal {signum} ({what}), so mpiexec stopped the others; the last "
              "checkpoint written is whole (--resume continues from it)", file=sys.stderr)
        return 1
    return code if code >= 0 else 128 - code


def _relay(stream) -> tuple[str, int] | None:
    """Copy the ranks' output to stdout without MPI's own lines; what killed a rank, if one died."""
    died, blank = None, False
    for line in stream:
        text = line.rstrip("\n")
        match = _DIED.search(text)
        if match:
            died = (match.group(1), int(match.group(2)))
        if _MPI_LINE.fullmatch(text):
            blank = False  # the blank line before MPI's banner is part of it
            continue
        if blank:
            sys.stdout.write("\n")
        blank = text == ""
        if not blank:
            sys.stdout.write(line)
            sys.stdout.flush()
    return died
