"""``charlm train --workers N``: run the same command as N MPI ranks on this machine.

``charlm[mpi]`` installs mpi4py and the mpich wheel, which puts ``mpiexec`` beside the Python
executable. ``launch`` starts ``mpiexec -n N python -m charlm ARGS`` with one BLAS thread per
rank (N ranks on N cores; more threads each would oversubscribe them), relays what the ranks
print, and

- passes Ctrl-C (SIGINT, SIGTERM, or SIGHUP when the terminal closes) to mpiexec, which passes
  it to every rank: they stop after the current step and rank 0 writes last.npz. A second
  Ctrl-C ends them at once (checkpoints are written atomically, so the last one stays whole).
  After SIGHUP nothing is printed (there is no terminal to print to), and the job ends as above;
- turns MPI's multi-line report of a rank that died (killed, out of memory) into one line;
  mpiexec has already ended the other ranks;
- deletes the shared-memory files (MPICH's ``/dev/shm/mpich*``) that a rank which died without
  finishing left, once the job is over: new since it started and mapped by no process.

mpiexec runs in a session of its own, so a terminal's Ctrl-C reaches it only through here (it
would take two as a forced abort). Every rank knows this process (CHARLM_LAUNCHER: its PID and
start time) and watches it (``watch_launcher``): when it is gone, killed with no chance to pass
anything on, the ranks stop after their step as if it had passed Ctrl-C, so nothing outlives it
by more than a step and the run resumes from last.npz.
"""

from __future__ import annotations

import _thread
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from .errors import CharlmError
from .processes import alive, identity, mapped_anywhere, parse_identity
from .threads import THREAD_VARIABLES

LAUNCHER_VARIABLE = "CHARLM_LAUNCHER"
WATCH_SECONDS = 0.5  # how often a rank looks for its launcher
SHM = Path("/dev/shm")

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
    env = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, "1"), "PYTHONUNBUFFERED": "1",
           LAUNCHER_VARIABLE: identity()}
    segments = _mpi_segments()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True, errors="replace",
                            start_new_session=True)

    def forward(signum, frame):
        if signum == signal.SIGHUP:  # the terminal is gone: nowhere to print
            _silence()
        proc.send_signal(signal.SIGINT)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        died = _relay(proc.stdout)
        code = proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _remove_left_segments(segments)
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
        try:
            if blank:
                sys.stdout.write("\n")
            blank = text == ""
            if not blank:
                sys.stdout.write(line)
                sys.stdout.flush()
        except OSError:  # the terminal closed (EIO) or the reader left (EPIPE): keep draining the ranks
            _silence()
    return died


def _silence() -> None:
    """Point this process's stdout and stderr at /dev/null: what it writes goes nowhere, quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):
            pass
    os.close(devnull)


def _mpi_segments() -> set[str]:
    try:
        return {p.name for p in SHM.glob("mpich*") if p.stat().st_uid == os.getuid()}
    except OSError:
        return set()


def _remove_left_segments(before: set[str]) -> None:
    """MPICH's shared-memory files that appeared during the job and that no process maps: what a
    rank that died without finishing left (a finished job removes its own)."""
    for name in _mpi_segments() - before:
        if not mapped_anywhere(SHM / name):
            try:
                (SHM / name).unlink()
            except OSError:
                pass


def watch_launcher(stop) -> None:
    """In a rank started by ``launch``: a daemon thread that, once the launcher is gone, silences
    this process's output (its pipe has no reader) and asks it to stop: ``stop()`` where the
    trainer is running (it stops after its step and rank 0 writes last.npz), else an interrupt
    of the main thread (nothing to save yet; the job ends)."""
    launcher = parse_identity(os.environ.get(LAUNCHER_VARIABLE, ""))
    if launcher is None:
        return

    def watch():
        while alive(*launcher):
            threading.Event().wait(WATCH_SECONDS)
        _silence()
        if not stop():
            _thread.interrupt_main()

    threading.Thread(target=watch, name="charlm-watch-launcher", daemon=True).start()
