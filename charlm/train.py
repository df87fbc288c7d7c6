"""The training loop: stateful truncated BPTT over char-rnn batches, evaluation, checkpoints
and exact resume.

The library never prints: it reports through a ``Reporter`` the caller hands it (the CLI
passes a tqdm one; tests and notebooks pass none).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .config import SECTIONS, Config
from .data import Batches, load_corpus, split
from .errors import CheckpointError, CorpusError, TrainingError
from .model import Model
from .optim import clip_grad_norm, make_optimizer
from .runlock import RunLock
from .schedule import Schedule, total_steps
from .score import LN2, evaluate


class Reporter:
    """Receives progress; every method is optional. The default reports nothing."""

    def start(self, trainer: "Trainer") -> None: ...

    def step(self, trainer: "Trainer", loss: float) -> None: ...

    def evaluated(self, record: dict) -> None: ...

    def message(self, text: str) -> None: ...

    def close(self) -> None: ...


@dataclass
class TrainResult:
    out_dir: Path
    step: int
    epoch: int
    best_val: float | None
    last_val: float | None
    reason: str  # "max_steps", "epochs", "max_minutes" or "interrupted"


class Trainer:
    """Everything one run needs; ``run()`` trains until a budget is spent or ``should_stop()``."""

    def __init__(self, config: Config, corpus_path, out_dir=None, resume=None, reporter: Reporter | None = None):
        self.reporter = reporter or Reporter()
        ck: Checkpoint | None = None
        if resume is not None:
            ck = resume if isinstance(resume, Checkpoint) else load_checkpoint(resume)
            resume = ck.meta.get("path", resume)
            _check_resumable(ck, config, resume)
            config = Config.from_dict(config.to_dict(), name=ck.config.name)
            out_dir = out_dir or Path(resume).parent
        self.config = config
        self.out_dir = Path(out_dir or Path("runs") / config.name)
        # On resume the corpus is encoded with the checkpoint's vocabulary; a character it
        # lacks is a CorpusError naming it.
        corpus = load_corpus(corpus_path, vocab=ck.vocab if ck else None)
        self.vocab = corpus.vocab
        if len(self.vocab) < 2:
            raise CorpusError(
                f"{corpus_path}: the corpus has a single distinct character ({self.vocab.chars[0]!r}); "
                "there is nothing to predict"
            )
        d = config.data
        train_ids, self.val_ids = split(corpus.ids, d.val_fraction)
        self.batches = Batches(train_ids, d.batch_size, d.seq_length, name=str(corpus_path))
        self.train_chars = len(train_ids)
        self.model = Model(config.model, len(self.vocab))
        self.optimizer = make_optimizer(self.model.flat, config.train)
        self.schedule = Schedule(config.train, self.batches.num_windows)
        self.total_steps = total_steps(config.train, self.batches.num_windows)
        self.rng = np.random.default_rng(config.train.seed)
        self.step = self.epoch = self.batch = 0
        self.elapsed = 0.0
        self.best_val = self.last_val = None
        self.loss_sum, self.loss_count = 0.0, 0
        self.state = None
        if ck is None:
            self.model.init(self.rng)
        else:
            self._restore(ck)

    # ---- checkpoint state -------------------------------------------------------------
    def _restore(self, ck: Checkpoint) -> None:
        for name, a in ck.params.items():
            self.model.params[name][...] = a
        if not ck.optim:
            raise CheckpointError("checkpoint has no optimizer state; it cannot be resumed (sampling and scoring still work)")
        for slot, arrays in ck.optim.items():
            for name, a in arrays.items():
                self.optimizer.state[slot][self.model.slices[name]] = a.reshape(-1)
        m = ck.meta
        try:
            self.optimizer.t = int(m["optimizer_t"])
            self.step, self.epoch, self.batch = int(m["step"]), int(m["epoch"]), int(m["batch"])
            self.elapsed = float(m["elapsed_s"])
            self.best_val, self.last_val = m["best_val"], m["last_val"]
            self.loss_sum, self.loss_count = float(m["loss_sum"]), int(m["loss_count"])
            self.rng.bit_generator.state = m["rng"]
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"checkpoint lacks training progress ({e}); it cannot be resumed") from None
        if not 0 <= self.batch < self.batches.num_windows:
            raise CheckpointError(f"checkpoint data position {self.batch} is outside this corpus's {self.batches.num_windows} windows")
        self.state = ck.state if self.batch > 0 else None

    def meta(self) -> dict:
        return {"step": self.step, "epoch": self.epoch, "batch": self.batch, "elapsed_s": self.elapsed,
                "best_val": self.best_val, "last_val": self.last_val, "loss_sum": self.loss_sum,
                "loss_count": self.loss_count, "rng": self.rng.bit_generator.state,
                "train_chars": self.train_chars}

    def save(self, name: str) -> None:
        path = self.out_dir / name
        try:
            save_checkpoint(path, self.model, self.vocab, self.config, self.meta(),
                            optimizer=self.optimizer, state=self.state)
        except OSError as e:
            raise TrainingError(
                f"cannot write checkpoint {path} at step {self.step} ({e.strerror or e}); "
                f"the previous {name}, if any, is intact"
            ) from None

    # ---- the loop ---------------------------------------------------------------------
    def _budget_spent(self) -> str | None:
        t = self.config.train
        if t.max_steps is not None and self.step >= t.max_steps:
            return "max_steps"
        if t.epochs is not None and self.step >= math.ceil(t.epochs * self.batches.num_windows):
            return "epochs"
        if t.max_minutes is not None and self.elapsed >= 60.0 * t.max_minutes:
            return "max_minutes"
        return None

    def train_step(self) -> float:
        """One window: forward, BPTT, clipping, update. Advances the data position."""
        if self.batch == 0 or self.state is None:
            self.state = self.model.zero_state(self.batches.B)  # reset at each epoch
        x, y = self.batches.window(self.batch)
        loss, state = self.model.loss_and_grad(x, y, self.state, self.rng)
        norm = clip_grad_norm(self.model.grad, self.config.train.grad_clip)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            raise TrainingError(
                f"step {self.step + 1}: {'loss' if not math.isfinite(loss) else 'gradient norm'} is not finite; "
                "lower train.lr or set a stronger train.grad_clip (best.npz and the last good last.npz are kept)"
            )
        self.optimizer.step(self.model.grad, self.schedule(self.step, self.epoch))
        self.state = state
        self.step += 1
        self.batch += 1
        if self.batch == self.batches.num_windows:
            self.batch, self.epoch = 0, self.epoch + 1
        self.loss_sum += loss
        self.loss_count += 1
        return loss

    def evaluate(self) -> dict:
        d = self.config.data
        val = evaluate(self.model, self.val_ids, d.batch_size, d.seq_length)
        self.last_val = val
        record = {"step": self.step, "epoch": round(self.epoch + self.batch / self.batches.num_windows, 4),
                  "elapsed_s": round(self.elapsed, 3),
                  "train_loss": self.loss_sum / self.loss_count if self.loss_count else None,
                  "val_loss": val, "val_bpc": val / LN2, "lr": self.schedule(max(0, self.step - 1), self.epoch)}
        self.loss_sum, self.loss_count = 0.0, 0
        return record

    def run(self, should_stop: Callable[[], bool] = lambda: False) -> TrainResult:
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrainingError(f"{self.out_dir}: cannot create the output directory ({e.strerror})") from None
        with RunLock(self.out_dir):
            _remove_stale_temporaries(self.out_dir)
            _truncate_metrics(self.out_dir / "metrics.jsonl", self.step)
            return self._loop(should_stop)

    def _loop(self, should_stop) -> TrainResult:
        t_cfg, has_val = self.config.train, len(self.val_ids) >= 2
        self.reporter.start(self)
        reason = self._budget_spent()
        chars_since, t_since = 0, time.perf_counter()
        try:
            while reason is None:
                t0 = time.perf_counter()
                loss = self.train_step()
                self.elapsed += time.perf_counter() - t0
                chars_since += self.batches.chars_per_window
                self.reporter.step(self, loss)
                reason = self._budget_spent()
                if has_val and (self.step % t_cfg.eval_every == 0 or reason is not None):
                    t0 = time.perf_counter()
                    record = self.evaluate()
                    self.elapsed += time.perf_counter() - t0
                    record["chars_per_s"] = round(chars_since / max(1e-9, time.perf_counter() - t_since), 1)
                    chars_since, t_since = 0, time.perf_counter()
                    self._append_metrics(record)
                    self.reporter.evaluated(record)
                    if self.best_val is None or record["val_loss"] < self.best_val:
                        self.best_val = record["val_loss"]
                        self.save("best.npz")
                if self.step % t_cfg.checkpoint_every == 0 or reason is not None:
                    self.save("last.npz")
                if reason is None and should_stop():
                    reason = "interrupted"
                    self.save("last.npz")
        finally:
            self.reporter.close()
        return TrainResult(self.out_dir, self.step, self.epoch, self.best_val, self.last_val, reason)

    def _append_metrics(self, record: dict) -> None:
        path = self.out_dir / "metrics.jsonl"
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise TrainingError(f"cannot append to {path} at step {self.step} ({e.strerror or e})") from None


def _check_resumable(ck: Checkpoint, config: Config, resume) -> None:
    """Only the train section may change on resume (to extend a run or change its cadence)."""
    for section in SECTIONS:
        if section != "train" and getattr(config, section) != getattr(ck.config, section):
            raise CheckpointError(
                f"{resume}: cannot resume with a different {section} section; only train.* keys may change "
                "(leave out --config to use the checkpoint's)"
            )


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the records up to ``step`` (a resumed run rewrites what came after its checkpoint)
    and drop a torn last line left by a killed run."""
    if not path.exists():
        return
    kept, changed = [], False
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True):
        try:
            ok = line.endswith("\n") and json.loads(line).get("step", 0) <= step
        except (json.JSONDecodeError, AttributeError):
            ok = False
        if ok:
            kept.append(line)
        changed |= not ok
    if changed:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, path)


def _remove_stale_temporaries(out_dir: Path) -> None:
    """Temporary checkpoint files of a run that was killed while saving (see save_checkpoint)."""
    for p in out_dir.glob(".*.npz.*.tmp"):
        try:
            p.unlink()
        except OSError:
            pass


def train(config: Config, corpus_path, out_dir=None, resume=None, reporter=None,
          should_stop: Callable[[], bool] = lambda: False) -> TrainResult:
    """Train (or resume) a model; see ``Trainer``."""
    return Trainer(config, corpus_path, out_dir, resume, reporter).run(should_stop)
