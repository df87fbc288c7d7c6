"""A run directory: what it holds, and the one place that reads, appends, cuts back, claims,
describes and writes its files. Everything else asks ``RunDir`` (and ``checkpoint_path``, in
predict/checkpoint.py, which chooses among its checkpoints). In a data-parallel job every rank
calls the writing methods and rank 0 alone writes (``Workers.on_root``), so the trainer's loop
has no rank tests.

    last.npz        the latest checkpoint, resumable: every train.checkpoint_every steps and at the end
    best.npz        the checkpoint at the lowest validation loss
    metrics.jsonl   one JSON object per evaluation, and events (a new corpus, a full evaluation) with an "event" key
    samples.jsonl   the sample generated at each evaluation
    .lock           the running trainer (runlock.py)

The logs are JSON Lines, every record with its "step": a resumed run cuts them back to its
checkpoint's step, so a step is never logged twice, and a line torn by a killed run is dropped.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

from ..errors import RunExistsError, TrainingError
from ..files import atomic_write_text, remove_stale_temporaries
from ..predict.checkpoint import BEST, LAST, checkpoint_path  # noqa: F401  (its checkpoints' names: the checkpoint module's)

METRICS, SAMPLES = "metrics.jsonl", "samples.jsonl"
LOGS = (METRICS, SAMPLES)
FILES = (LAST, BEST) + LOGS


def default_dir(config_name: str) -> Path:
    """Where a run goes when no --out is given."""
    return Path("runs") / config_name


def read_records(path: Path) -> list[dict]:
    """The JSON objects of a JSON Lines file; a torn or foreign line is skipped."""
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        r = _json_or_none(line)
        if isinstance(r, dict):
            out.append(r)
    return out


def evaluations(metrics: Path) -> list[dict]:
    """A metrics.jsonl's evaluation records, in order (events left out)."""
    return [r for r in read_records(metrics) if isinstance(r.get("val_loss"), (int, float)) and "event" not in r]


class RunDir:
    """One run's directory (it may not exist yet); ``workers``: the job whose rank 0 writes it."""

    def __init__(self, path, workers=None):
        from .parallel import Workers

        self.path = Path(path)
        self.workers = workers or Workers()

    # ---- what a run writes (every rank calls; rank 0 writes) --------------------------------
    @contextmanager
    def open(self, overwrite: bool, resumed_from: Path | None, step: int, events: list[dict]):
        """For the life of a run: the directory made, locked (runlock.py), claimed (``claim``),
        prepared to go on from ``step`` (``prepare``), and ``events`` logged."""
        from .runlock import RunLock

        lock = RunLock(self.path)

        def begin():
            self.create()
            lock.acquire()
            try:
                self.claim(overwrite, resumed_from)
                self.prepare(step)
                for event in events:
                    self.append(METRICS, event, step)
            except BaseException:
                lock.release()
                raise

        self.workers.on_root(begin)
        try:
            yield self
        finally:
            if self.workers.root:
                lock.release()

    def log(self, name: str, record: dict, step: int) -> None:
        """A line of metrics.jsonl or samples.jsonl."""
        self.workers.on_root(lambda: self.append(name, record, step))

    def save(self, name: str, write, step: int) -> None:
        """A checkpoint: ``write(path)`` on rank 0, one line naming the file and the step when the
        disk refuses it (the previous one is intact: checkpoints are written atomically)."""
        def save():
            path = self.path / name
            try:
                write(path)
            except OSError as e:
                raise TrainingError(f"cannot write checkpoint {path} at step {step} ({e.strerror or e}); "
                                    f"the previous {name}, if any, is intact") from None

        self.workers.on_root(save)

    # ---- reading and keeping the files ------------------------------------------------------

    def files(self) -> list[Path]:
        """The run files that exist."""
        return [self.path / f for f in FILES if (self.path / f).exists()]

    def evaluations(self) -> list[dict]:
        p = self.path / METRICS
        return evaluations(p) if p.is_file() else []

    def samples(self) -> list[dict]:
        p = self.path / SAMPLES
        return read_records(p) if p.is_file() else []

    def append(self, name: str, record: dict, step: int) -> None:
        path = self.path / name
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, allow_nan=False) + "\n")
        except OSError as e:
            raise TrainingError(f"cannot append to {path} at step {step} ({e.strerror or e})") from None

    def create(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrainingError(f"{self.path}: cannot create the output directory ({e.strerror})") from None

    def prepare(self, step: int) -> None:
        """Once claimed, before a run writes: remove temporaries of a killed writer and cut the
        logs back to ``step`` (a resumed run rewrites what came after its checkpoint)."""
        remove_stale_temporaries(self.path, ".*.npz.*.tmp")
        for name in LOGS:
            self._cut(self.path / name, step)

    def claim(self, overwrite: bool, resumed_from: Path | None) -> None:
        """A new run never replaces another run's files unless ``overwrite``; a resumed run
        writes into its own directory, or into one that holds no run."""
        if resumed_from is not None and resumed_from.parent.resolve() == self.path.resolve():
            return
        found = self.files()
        if not found:
            return
        if not overwrite:
            raise RunExistsError(f"{self.path} already holds a run ({self.describe()}): continue it with "
                                 "{resume}, write to another {out_dir}, or replace it with {overwrite}",
                                 resume=str(self.path), out_dir=None, overwrite=True)
        for p in found:
            p.unlink()

    def describe(self) -> str:
        """'step 5,400, best val 1.4973 nats/char' from the evaluations, or the files there."""
        evals = self.evaluations()
        if evals:
            return f"step {int(evals[-1].get('step', 0)):,}, best val {min(r['val_loss'] for r in evals):.4f} nats/char"
        return "files " + ", ".join(p.name for p in self.files())

    @staticmethod
    def _cut(path: Path, step: int) -> None:
        if not path.exists():
            return
        kept, changed = [], False
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True):
            record = _json_or_none(line)
            ok = line.endswith("\n") and isinstance(record, dict) and record.get("step", 0) <= step
            if ok:
                kept.append(line)
            changed |= not ok
        if changed:
            atomic_write_text(path, "".join(kept))


def _json_or_none(line: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None
