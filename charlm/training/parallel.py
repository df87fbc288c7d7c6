"""Data parallelism across processes: which share of the batch this process trains, and the few
collective operations that keep N processes one training run.

Synchronous data parallelism. Each of N ranks owns b = B / N of the batch's B streams and their
hidden state, and computes the gradient of its share's mean loss; an allreduce averages the N
gradients before clipping and the optimizer step. The mean of N equal shares' means is the
whole batch's mean, so every rank takes the step one process would take with the whole batch
(up to the order of float additions), from the same parameters: the ranks stay one model
without sending weights, which ``check_same`` verifies at every evaluation. Rank 0 alone
writes (checkpoints, metrics, samples) and prints.

``Workers()`` is one process: every collective is the identity and MPI is never imported, so
the trainer has one code path and the runtime needs no MPI. ``current()`` is this process's
``Workers``: ``MPIWorkers`` when an MPI launcher started it (mpiexec sets PMI_SIZE, or Open
MPI's OMPI_COMM_WORLD_SIZE), which needs ``charlm[mpi]``.

Shape letters: B streams in the global batch, b this rank's, H hidden size, N ranks.
"""

from __future__ import annotations

import json
import os
import zlib
from contextlib import contextmanager
from functools import cache

import numpy as np

from ..errors import CharlmError, TrainingError
from ..threads import ranks_from_launcher


class WorkerFailed(CharlmError):
    """Another rank failed where this one did not; that rank says why, this one ends quietly."""

    quiet = True


class Workers:
    """One process alone: rank 0 of 1. ``MPIWorkers`` overrides every collective."""

    rank, size, local_size = 0, 1, 1

    @property
    def root(self) -> bool:
        return self.rank == 0

    def share(self, n: int) -> slice:
        """This rank's contiguous part of n items (streams); parts differ by at most one."""
        return slice(n * self.rank // self.size, n * (self.rank + 1) // self.size)

    def check_divides(self, batch_size: int) -> None:
        if batch_size % self.size:
            raise CharlmError(f"data.batch_size {batch_size} does not divide among {self.size} workers; "
                              f"use a batch_size that is a multiple of {self.size}, or other workers")

    # ---- the training step ----------------------------------------------------------------
    def mean_(self, a: np.ndarray) -> None:
        """In place: ``a`` becomes its mean over the ranks (an allreduce)."""

    def mean(self, x: float) -> float:
        return x

    def agree(self, elapsed_s: float, stop: bool) -> tuple[float, bool]:
        """Rank 0's clock and whether any rank was asked to stop, on every rank: the budget,
        the schedule and the stop then decide the same on all of them."""
        return elapsed_s, stop

    def seconds(self, s: float) -> float:
        """A timing every rank agrees on: the slowest rank's."""
        return s

    # ---- evaluation and checkpoints -------------------------------------------------------
    def gather(self, a: np.ndarray) -> np.ndarray | None:
        """Every rank's 1-d ``a`` joined in rank order, on rank 0 (None elsewhere); lengths may differ."""
        return a

    def broadcast(self, values: list[float]) -> list[float]:
        """Rank 0's floats on every rank (NaN stands for None)."""
        return values

    def gather_state(self, state):
        """Hidden state, per layer a tuple of (H, b) -> (H, B) on rank 0 (None elsewhere)."""
        return state

    def local_state(self, state):
        """Hidden state for the whole batch, per layer a tuple of (H, B) -> this rank's (H, b)."""
        return state

    def gather_json(self, obj) -> list | None:
        """Every rank's JSON-able ``obj``, in rank order, on rank 0 (None elsewhere)."""
        return [obj]

    def check_same(self, flat: np.ndarray, step: int) -> None:
        """``TrainingError`` on every rank when the ranks' parameters differ (a CRC of the bytes)."""

    # ---- failures ---------------------------------------------------------------------------
    def alike(self, error: CharlmError) -> CharlmError:
        """``error``, raised on every rank from values they agree on: rank 0's says why."""
        error.quiet = not self.root
        return error

    def flags(self, failed: bool) -> list[bool]:
        return [failed]

    @contextmanager
    def together(self):
        """A block every rank runs: if it raises a ``CharlmError`` or ``OSError`` on any rank,
        it raises on every rank, so none is left waiting in a collective for one that has gone.
        A rank that failed re-raises its own error; the others raise ``WorkerFailed``. Where
        rank 0 failed, the other ranks' errors are quiet (rank 0 speaks for them)."""
        try:
            yield
        except (CharlmError, OSError) as e:
            failed = self.flags(True)
            if not self.root and failed[0]:
                e.quiet = True
            raise
        else:
            failed = self.flags(False)
            if any(failed):
                raise WorkerFailed(f"worker {failed.index(True)} failed")

    def on_root(self, fn):
        """``fn()`` on rank 0 alone, as a block every rank runs (``together``): its result on
        rank 0, None elsewhere. What only rank 0 does (write the run directory, sample) is
        written once, here, instead of a rank test at every call."""
        with self.together():
            return fn() if self.root else None

    def root_first(self, fn):
        """``fn()`` on rank 0, then on the others: the corpus is decoded once into the cache
        (cache.py), and the other ranks map what rank 0 wrote instead of decoding it again."""
        with self.together():
            result = fn() if self.root else None
        return result if self.root else fn()


class MPIWorkers(Workers):
    """The ranks of an MPI job (mpi4py's COMM_WORLD)."""

    def __init__(self, comm, MPI):
        self.comm, self.MPI = comm, MPI
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.local_size = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()  # ranks on this machine

    def mean_(self, a):
        self.comm.Allreduce(self.MPI.IN_PLACE, a, op=self.MPI.SUM)
        a *= a.dtype.type(1.0 / self.size)

    def mean(self, x):
        return self._sum([x])[0] / self.size

    def agree(self, elapsed_s, stop):
        clock, stops = self._sum([elapsed_s if self.root else 0.0, float(stop)])
        return clock, stops > 0

    def seconds(self, s):
        out = np.array([s])
        self.comm.Allreduce(self.MPI.IN_PLACE, out, op=self.MPI.MAX)
        return float(out[0])

    def _sum(self, values):
        out = np.array(values, dtype=np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, out, op=self.MPI.SUM)
        return out.tolist()

    def gather(self, a):
        a = np.ascontiguousarray(a)
        counts = np.empty(self.size, np.int64)
        self.comm.Allgather(np.array([len(a)], np.int64), counts)
        out = np.empty(int(counts.sum()), a.dtype) if self.root else None
        self.comm.Gatherv(a, [out, counts] if self.root else None, root=0)
        return out

    def broadcast(self, values):
        out = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        self.comm.Bcast(out, root=0)
        return [None if np.isnan(v) else float(v) for v in out]

    def gather_state(self, state):
        gathered = []
        for tensors in state:
            layer = []
            for a in tensors:  # (H, b)
                a = np.ascontiguousarray(a)
                buf = np.empty((self.size, *a.shape), a.dtype) if self.root else None
                self.comm.Gather(a, buf, root=0)
                layer.append(None if buf is None else np.concatenate(buf, axis=1))  # (N, H, b) -> (H, B)
            gathered.append(tuple(layer))
        return gathered if self.root else None

    def local_state(self, state):
        return [tuple(np.ascontiguousarray(a[:, self.share(a.shape[1])]) for a in tensors) for tensors in state]

    def gather_json(self, obj):
        data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
        sizes = np.empty(self.size, np.int64)
        self.comm.Allgather(np.array([len(data)], np.int64), sizes)
        joined = self.gather(data)
        if not self.root:
            return None
        return [json.loads(joined[e - n : e].tobytes()) for e, n in zip(np.cumsum(sizes), sizes)]

    def check_same(self, flat, step):
        crcs = np.empty(self.size, np.int64)
        self.comm.Allgather(np.array([zlib.crc32(flat.view(np.uint8))], np.int64), crcs)
        if len(set(crcs.tolist())) > 1:
            raise self.alike(TrainingError(f"step {step}: the workers' parameters differ (one should never see this: "
                                "please report it); the job stops, and its last checkpoint is intact"))

    def flags(self, failed):
        out = np.empty(self.size, np.int8)
        self.comm.Allgather(np.array([failed], np.int8), out)
        return [bool(f) for f in out]

    def abort(self, code: int) -> None:
        """End every rank now: for an error only this rank saw, where waiting would hang the job.
        The job's shared-memory files are unlinked first (this process maps them, so they are
        this job's): an aborted job does not finish, and would leave them behind."""
        for path in _mapped_mpi_segments():
            try:
                os.unlink(path)
            except OSError:
                pass
        self.comm.Abort(code)


def _mapped_mpi_segments() -> set[str]:
    try:
        with open("/proc/self/maps") as f:
            return {line.split()[-1] for line in f if "/dev/shm/mpich" in line and line.rstrip().endswith(tuple("0123456789"))}
    except OSError:
        return set()


@cache
def current() -> Workers:
    """This process's place in the job: ``MPIWorkers`` under an MPI launcher with more than one
    rank, otherwise ``Workers()``. ``CharlmError`` when MPI started it but mpi4py is missing."""
    if ranks_from_launcher() == 1:
        return Workers()
    try:
        from mpi4py import MPI
    except ImportError:
        raise CharlmError("this process was started by an MPI launcher, but mpi4py is not installed: "
                          "pip install 'charlm[mpi]'") from None
    return MPIWorkers(MPI.COMM_WORLD, MPI)
