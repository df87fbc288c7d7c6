"""A run directory: what it holds, and the one place that reads, appends, cuts back, claims,
describes and chooses among its files. Everything else asks ``RunDir`` or ``checkpoint_path``.

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
from pathlib import Path

from .errors import CheckpointError, RunExistsError, TrainingError
from .files import atomic_write_text, remove_stale_temporaries

LOGS = ("metrics.jsonl", "samples.jsonl")
FILES = ("last.npz", "best.npz") + LOGS


def checkpoint_path(path, resume: bool = False) -> Path:
    """The checkpoint ``path`` names: a checkpoint file, or a run directory's best.npz (else its
    last.npz) to use a model, or its last.npz to resume the run."""
    p = Path(path)
    if p.is_dir():
        for name in ("last.npz",) if resume else ("best.npz", "last.npz"):
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"{p}: run directory has no {'last.npz to resume' if resume else 'best.npz or last.npz'}")
    if not p.exists():
        raise CheckpointError(f"{p}: checkpoint not found")
    return p


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
    """One run's directory (it may not exist yet)."""

    def __init__(self, path):
        self.path = Path(path)

    def files(self) -> list[Path]:
        """The run files that exist."""
        return [self.path / f for f in FILES if (self.path / f).exists()]

    def evaluations(self) -> list[dict]:
        p = self.path / "metrics.jsonl"
        return evaluations(p) if p.is_file() else []

    def samples(self) -> list[dict]:
        p = self.path / "samples.jsonl"
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
