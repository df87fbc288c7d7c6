"""What a training run knows about itself and tells others: its progress (``TrainState``, saved in
every checkpoint and restored from it exactly), what it reports as it goes (``Reporter``, with
``RunInfo`` and ``Progress``) and how it ended (``TrainResult``)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from ..config import Config
from ..errors import CheckpointError, CorpusError


@dataclass
class RunInfo:
    """What a reporter is told when a run starts."""

    config: Config
    param_counts: list[tuple[str, int]]
    train_chars: int
    val_chars: int
    vocab_size: int
    windows_per_epoch: int
    chars_per_window: int
    out_dir: Path
    step: int
    total_steps: int | None
    last_val: float | None


@dataclass
class Progress:
    """What a reporter is told after each step."""

    step: int
    epoch: float  # epochs done, with the fraction of the current one
    loss: float


@dataclass
class TrainResult:
    out_dir: Path
    step: int
    epoch: int
    best_val: float | None
    last_val: float | None
    reason: str  # "max_steps", "epochs", "max_minutes", "early_stopping" or "interrupted"

    def to_dict(self) -> dict:
        return {"out_dir": str(self.out_dir), "step": self.step, "epoch": self.epoch, "best_val": self.best_val,
                "last_val": self.last_val, "reason": self.reason}


class Reporter:
    """Receives progress; every method is optional. The default reports nothing (the library
    never prints: the CLI passes a progress bar, tests and notebooks pass none)."""

    def start(self, info: RunInfo) -> None: ...

    def step(self, progress: Progress) -> None: ...

    def evaluated(self, record: dict) -> None: ...

    def evaluated_full(self, record: dict) -> None: ...

    def sampled(self, record: dict) -> None: ...

    def stopped(self, result: TrainResult) -> None: ...

    def close(self) -> None: ...


class CorpusMismatchError(CorpusError):
    """Resuming on another corpus than the run was trained on (``allow_new_corpus`` permits it)."""


@dataclass
class TrainState:
    """A run's progress: everything a checkpoint saves besides arrays (weights, optimizer
    moments, hidden state), under the same names in its metadata, and restores exactly. The
    form of each field in a checkpoint is checked where it is read (predict/checkpoint.py)."""

    step: int = 0  # optimizer updates done
    epoch: int = 0  # passes finished
    batch: int = 0  # the next window of this pass
    elapsed_s: float = 0.0  # training and evaluation time, without start-up
    best_val: float | None = None
    last_val: float | None = None
    loss_sum: float = 0.0  # training loss since the last evaluation
    loss_count: int = 0
    plateau_ref: float | None = None  # early stopping: the best validation loss that counted
    stale_evals: int = 0  # evaluations since it did
    lr: float | None = None  # the learning rate of the last step
    mix_weight: float | None = None  # the n-gram mixture's weight on the network, from the last evaluation
    net_val: float | None = None  # with a mixture: the network's own loss at the last evaluation
    lineage: dict | None = None  # for a fine-tuned run: where its first weights came from
    rank_rngs: list | None = None  # with workers: ranks 1..N-1's RNG states at the checkpoint (rank 0's is rng)
    rng: np.random.Generator = field(default_factory=np.random.default_rng)  # dropout masks and samples

    def epochs(self, windows_per_epoch: int) -> float:
        """Passes done, with the fraction of the current one."""
        return self.epoch + self.batch / windows_per_epoch

    def to_meta(self) -> dict:
        meta = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "rng"}
        return {**meta, "rng": self.rng.bit_generator.state}

    @classmethod
    def from_meta(cls, m: dict) -> TrainState:
        """``CheckpointError`` when a field a resume needs is missing."""
        st = cls()
        try:
            for f in fields(cls):
                if f.name == "rng":
                    st.rng.bit_generator.state = m["rng"]
                elif f.name in ("step", "epoch", "batch", "loss_count", "stale_evals"):
                    setattr(st, f.name, int(m.get(f.name, 0) if f.name == "stale_evals" else m[f.name]))
                elif f.name in ("elapsed_s", "loss_sum"):
                    setattr(st, f.name, float(m[f.name]))
                else:
                    setattr(st, f.name, m.get(f.name))
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"checkpoint lacks training progress ({e}); it cannot be resumed") from None
        return st
