"""``charlm train --workers N``: run the same command as N MPI ranks on this machine.

``charlm[mpi]`` installs mpi4py and the mpich wheel, which puts ``mpiexec`` beside the Python
executable. ``launch`` starts ``mpiexec -n N python -m charlm ARGS`` with one BLAS thread per
rank (N ranks on N cores; more threads each would oversubscribe them), relays what the ranks
print, and turns MPI's multi-line report of a rank that died (killed, out of memory) into one
line (mpiexec has already ended the other ranks).

How the ranks learn to stop. The launcher holds the write end of a pipe whose read end every rank
inherits (CHARLM_STOP_FD, through mpiexec); nothing is ever written to it, so its end is the
message, and every rank reads it at once, whether the launcher closed it (the first Ctrl-C,
SIGTERM, or SIGHUP when the terminal closes) or died (kill -9): ``watch_launcher`` in each rank
then asks the trainer to stop after its step (rank 0 writes last.npz); before training has begun,
see ``watch_launcher``. A rank that finds its launcher gone prints nothing more. A second Ctrl-C reaches the ranks through mpiexec as SIGINT and ends them at once
(checkpoints are written atomically, so the last one stays whole). mpiexec runs in a session of
its own, so a terminal's Ctrl-C reaches it only through here.

What a job leaves when a rank dies without finishing (MPICH's /dev/shm/mpich* segments, hydra's
/tmp/hydra_hwloc_xmlfile_*) is deleted once the job is over: the files new since it started that
no process has open or mapped. The launcher does it when it ends; a launcher killed with -9 ends
without a word, so a small cleaner process, started beside mpiexec in a session of its own, does
it once both mpiexec and the launcher are gone (``start_cleaner``).
"""

from __future__ import annotations

import _thread
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..errors import CharlmError
from ..processes import alive, identity, in_use, parse_identity
from ..threads import THREAD_VARIABLES

LAUNCHER_VARIABLE = "CHARLM_LAUNCHER"  # the launcher's PID and start time: is it still alive?
STOP_FD_VARIABLE = "CHARLM_STOP_FD"  # the read end of the launcher's pipe
LEFTOVERS = ("/dev/shm/mpich*", "/tmp/hydra_hwloc_xmlfile_*")

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
    # cores are many times slower a step (docs/scaling.md), the threads spinning against each
    # other and MPI's polling.
    read_end, write_end = os.pipe()
    env = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, "1"), "PYTHONUNBUFFERED": "1",
           LAUNCHER_VARIABLE: identity(), STOP_FD_VARIABLE: str(read_end)}
    before = _leftovers()
    # mpiexec holds the read end of its own output pipe too: a launcher killed with -9 leaves a
    # pipe that still has a reader, so a line written after it (one the ranks had not yet silenced)
    # fills the pipe's buffer instead of failing, which would make mpiexec kill the ranks mid-exit
    # and leave MPI's files behind. restore_signals=False keeps SIGPIPE ignored there as well.
    out_read, out_write = os.pipe()
    asked: list[int] = []
    job: list[subprocess.Popen] = []

    def forward(signum, frame):
        if signum == signal.SIGHUP:  # the terminal is gone: nowhere to print
            _silence()
        asked.append(signum)
        if len(asked) == 1:
            os.close(write_end)  # every rank sees the pipe end: stop after the step
        elif job:
            job[0].send_signal(signal.SIGINT)  # again: mpiexec passes it on, and the ranks end now

    # Installed before mpiexec starts: a Ctrl-C between the two would end the launcher before it
    # could tell the ranks to stop.
    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=out_write, start_new_session=True,
                                pass_fds=(read_end, out_read), restore_signals=False)
        job.append(proc)
        for fd in (read_end, out_write):
            os.close(fd)
        start_cleaner(proc.pid, before)
        with os.fdopen(out_read, encoding=sys.stdout.encoding or "utf-8", errors="replace") as stdout:
            died = _relay(stdout)
        code = proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if not asked:
            os.close(write_end)
        _remove_leftovers(before)
    if asked:
        return 128 + asked[0]
    if died:
        what, signum = died
        print(f"Error: a worker ended with signal {signum} ({what}), so mpiexec stopped the others; the last "
              "checkpoint written is whole (--resume continues from it)", file=sys.stderr)
        return 1
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        print(f"Error: mpiexec ended with signal {-code} ({name}) and took the workers with it; the last checkpoint "
              "written is whole (--resume continues from it)", file=sys.stderr)
        return 1
    if code > 2 and code != 130:  # MPI's report was not the usual one (a rank that lost a peer mid-collective aborted first)
        print(f"Error: a worker failed, so the job ended (mpiexec's exit status {code}); the last checkpoint "
              "written is whole (--resume continues from it)", file=sys.stderr)
        return 1
    return code


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


def _leftovers() -> set[Path]:
    """MPI's files of this user that a job may leave (LEFTOVERS)."""
    found = set()
    for pattern in LEFTOVERS:
        p = Path(pattern)
        try:
            found |= {q for q in p.parent.glob(p.name) if q.stat().st_uid == os.getuid()}
        except OSError:
            continue
    return found


def _remove_leftovers(before: set[Path]) -> None:
    """The files of LEFTOVERS that appeared during the job and that no process has open or maps:
    what a rank (or mpiexec) that died without finishing left; a finished job removes its own."""
    for path in _leftovers() - before:
        if not in_use(path):
            try:
                path.unlink()
            except OSError:
                pass


def start_cleaner(mpiexec_pid: int, before: set[Path], launcher: str | None = None) -> subprocess.Popen:
    """A process of its own that outlives this launcher (``launcher``: its identity, this
    process's by default): once mpiexec and the launcher have both ended, it deletes what the job
    left (``_remove_leftovers(before)``), which a launcher killed with -9 could not."""
    code = "import sys; from charlm.training.launch import clean_after; clean_after(sys.argv[1])"
    job = json.dumps({"mpiexec": identity(mpiexec_pid), "launcher": launcher or identity(),
                      "before": sorted(map(str, before))})
    # charlm may be run from a source tree rather than installed: the cleaner imports this copy
    source = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-c", code, job], start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def clean_after(job: str) -> None:
    """The cleaner's body (``start_cleaner``): wait for the job's processes, then delete."""
    job = json.loads(job)
    for who in (job["mpiexec"], job["launcher"]):
        process = parse_identity(who)
        while process is not None and alive(*process):
            time.sleep(0.5)
    _remove_leftovers({Path(p) for p in job["before"]})


def watch_launcher(stop) -> None:
    """In a rank that ``launch`` started: a daemon thread that waits for the end of the
    launcher's pipe (CHARLM_STOP_FD) and then stops this rank with ``stop(later)``, which asks a
    running trainer to stop after its step and returns True. Before training has begun:

    - the launcher is alive (a Ctrl-C while the ranks start): ``stop(False)`` returns False and
      the main thread is interrupted; the job ends now, and the launcher deletes what MPI leaves;
    - the launcher is gone (kill -9): there is no one to delete what an interrupted job leaves, so
      ``stop(True)`` has the trainer stop when it begins, before its first step, and the job ends
      as a job should. This process's output goes nowhere from then on (its pipe has no reader).
    """
    launcher = parse_identity(os.environ.get(LAUNCHER_VARIABLE, ""))
    try:
        fd = int(os.environ[STOP_FD_VARIABLE])
        os.fstat(fd)
    except (KeyError, ValueError, OSError):
        return

    def watch():
        try:
            while os.read(fd, 4096):  # nothing is written: the end of the pipe is the message
                pass
        except OSError:
            pass
        gone = launcher is None or not alive(*launcher)
        if gone:
            _silence()
        if not stop(gone):
            _silence_stderr()  # MPI's report of the abort would be the user's only line
            _thread.interrupt_main()

    threading.Thread(target=watch, name="charlm-watch-launcher", daemon=True).start()


def quiet_if_orphaned() -> None:
    """In a rank that ``launch`` started whose launcher is gone: silence this process now. What a
    rank prints travels through mpiexec to the launcher's pipe; once that pipe has no reader, a
    line there ends the job at once (mpiexec fails to write it and kills the ranks mid-exit),
    which the watch may not have prevented yet when another rank saw the launcher go first."""
    launcher = parse_identity(os.environ.get(LAUNCHER_VARIABLE, ""))
    if launcher is not None and not alive(*launcher):
        _silence()


def _silence_stderr() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stderr.fileno())
    except (OSError, ValueError):
        pass
    os.close(devnull)
