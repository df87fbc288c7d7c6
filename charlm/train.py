"""The training loop: stateful truncated BPTT over char-rnn batches, evaluation, checkpoints,
exact resume, early stopping.

Two ways in: ``Trainer(config, corpus, out_dir)`` starts a new run, ``Trainer.resume(checkpoint,
corpus)`` continues one. A run directory holds ``last.npz``, ``best.npz`` and ``metrics.jsonl``;
a new run never replaces them unless asked to (``overwrite=True``).

The library never prints: it reports through a ``Reporter`` the caller hands it (the CLI
passes a tqdm one; tests and notebooks pass none).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checkpoint import Checkpoint, load_checkpoint, read_meta, save_checkpoint
from .config import SECTIONS, Config
from .data import Batches, Corpus, describe_fingerprint, load_corpus, split
from .errors import CharlmError, CheckpointError, CorpusError, RunExistsError, TrainingError
from .files import atomic_write_text, remove_stale_temporaries
from .memory import check_fits, training_memory
from .mixture import Mixture, cross_fitted_nats
from .model import Model
from .ngram import KneserNey
from .optim import clip_grad_norm, make_optimizer
from .runlock import RunLock
from .sample import generate
from .schedule import Budget, Schedule
from .score import LN2, char_nats, evaluate

RUN_FILES = ("last.npz", "best.npz", "metrics.jsonl", "samples.jsonl")
MAX_NGRAM_CHARS = 20_000_000  # the n-gram of a mixture is stored in every checkpoint; beyond this a network wins anyway
LOGS = ("metrics.jsonl", "samples.jsonl")  # JSON Lines with a step each, cut back to the checkpoint on resume


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


class Reporter:
    """Receives progress; every method is optional. The default reports nothing."""

    def start(self, info: RunInfo) -> None: ...

    def step(self, progress: Progress) -> None: ...

    def evaluated(self, record: dict) -> None: ...

    def sampled(self, record: dict) -> None: ...

    def stopped(self, result: TrainResult) -> None: ...

    def close(self) -> None: ...


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


class CorpusMismatchError(CorpusError):
    """Resuming on another corpus than the run was trained on (``allow_new_corpus`` permits it)."""


class Trainer:
    """Everything one run needs; ``run()`` trains until a budget is spent or ``should_stop()``."""

    def __init__(self, config: Config, corpus, out_dir=None, reporter: Reporter | None = None,
                 overwrite: bool = False, start=None):
        """A new run of ``config`` on ``corpus`` (a path or a ``Corpus``) into ``out_dir``
        (default runs/<config name>). ``start`` (a ``finetune.Start``) gives the initial weights
        and the lineage of a fine-tuned run; without it the weights are drawn at random."""
        self._build(config, corpus, out_dir or Path("runs") / config.name, reporter, vocab=None)
        self.overwrite, self.resumed_from, self.events = overwrite, None, []
        self.model.init(self.rng)
        if start is not None:
            for name, a in start.params.items():
                self.model.params[name][...] = a
            self.lineage = start.lineage

    @classmethod
    def resume(cls, checkpoint, corpus, config: Config | None = None, out_dir=None,
               reporter: Reporter | None = None, allow_new_corpus: bool = False) -> Trainer:
        """Continue the run saved in ``checkpoint`` (a Checkpoint, a last.npz, or a run directory):
        same step, optimizer state, schedule, data position, hidden state and RNG. ``config`` may
        change train.* keys only."""
        ck = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(run_checkpoint(checkpoint))
        path = Path(ck.meta.get("path", "last.npz"))
        config = config or ck.config
        _check_resumable(ck, config, path)
        config = Config.from_dict(config.to_dict(), name=ck.config.name)
        tr = cls.__new__(cls)
        # The corpus is encoded with the checkpoint's vocabulary; a character it lacks is a
        # CorpusError naming it.
        tr._build(config, corpus, out_dir or path.parent, reporter, vocab=ck.vocab)
        tr.overwrite, tr.resumed_from, tr.events = False, path, []
        tr._restore(ck, allow_new_corpus)
        return tr

    def _build(self, config: Config, corpus, out_dir, reporter, vocab) -> None:
        self.reporter = reporter or Reporter()
        self.config, self.out_dir = config, Path(out_dir)
        self.corpus = corpus if isinstance(corpus, Corpus) else load_corpus(corpus, vocab=vocab)
        self.vocab = self.corpus.vocab
        if len(self.vocab) < 2:
            raise CorpusError(
                f"{self.corpus.fingerprint['path']}: the corpus has a single distinct character "
                f"({self.vocab.chars[0]!r}); there is nothing to predict"
            )
        self.memory = training_memory(config, len(self.vocab), len(self.corpus))
        check_fits(self.memory)  # before the model, optimizer or buffers are allocated
        d = config.data
        train_ids, self.val_ids = split(self.corpus.ids, d.val_fraction)
        self.train_ids = train_ids
        self.batches = Batches(train_ids, d.batch_size, d.seq_length, name=self.corpus.fingerprint["path"])
        self.train_chars = len(train_ids)
        self.model = Model(config.model, len(self.vocab))
        self.optimizer = make_optimizer(self.model.flat, config.train)
        self.budget = Budget(config.train, self.batches.num_windows)
        self.schedule = Schedule(config.train, self.budget.total_steps)
        self.rng = np.random.default_rng(config.train.seed)
        self.ngram = self._ngram(train_ids) if config.model.ngram_order else None
        self.mix_weight, self._val_kn_nats = None, None
        self.lineage = None  # for a fine-tuned run: where its first weights came from
        self.step = self.epoch = self.batch = 0
        self.elapsed = 0.0
        self.best_val = self.last_val = None
        self.plateau_ref, self.stale_evals = None, 0  # early stopping: best val that counted, evals since
        self.loss_sum, self.loss_count = 0.0, 0
        self.lr = None  # the learning rate of the last step
        self.state = None

    def _ngram(self, train_ids) -> KneserNey:
        if len(train_ids) > MAX_NGRAM_CHARS:
            raise CorpusError(f"{self.corpus.fingerprint['path']}: {len(train_ids):,} training characters; the n-gram "
                              f"mixture (model.ngram_order) counts at most {MAX_NGRAM_CHARS:,}: set model.ngram_order=0")
        return KneserNey(train_ids, self.config.model.ngram_order, len(self.vocab))

    # ---- checkpoint state -------------------------------------------------------------
    def _restore(self, ck: Checkpoint, allow_new_corpus: bool) -> None:
        ck.load_params(self.model)
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
            self.plateau_ref, self.stale_evals = m.get("plateau_ref"), int(m.get("stale_evals", 0))
            self.lr = m.get("lr")
            self.mix_weight, self.lineage = m.get("mix_weight"), m.get("lineage")
            self.rng.bit_generator.state = m["rng"]
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"checkpoint lacks training progress ({e}); it cannot be resumed") from None
        old, new = m.get("corpus"), self.corpus.fingerprint
        if isinstance(old, dict) and (old.get("chars"), old.get("sha256")) != (new["chars"], new["sha256"]):
            if not allow_new_corpus:
                raise CorpusMismatchError(f"{describe_fingerprint(new)} is not the corpus this run was trained on, "
                                          f"{describe_fingerprint(old)}; allow_new_corpus=True fine-tunes on it")
            # Fine-tuning: the old data position means nothing in the new text; start its first epoch.
            self.batch = 0
            self.events.append({"step": self.step, "event": "new_corpus", "corpus": new, "previous": old})
        if not 0 <= self.batch < self.batches.num_windows:
            raise CheckpointError(f"checkpoint data position {self.batch} is outside this corpus's {self.batches.num_windows} windows")
        self.state = ck.state if self.batch > 0 else None

    def meta(self) -> dict:
        return {"step": self.step, "epoch": self.epoch, "batch": self.batch, "elapsed_s": self.elapsed,
                "best_val": self.best_val, "last_val": self.last_val, "loss_sum": self.loss_sum,
                "loss_count": self.loss_count, "rng": self.rng.bit_generator.state, "lr": self.lr,
                "plateau_ref": self.plateau_ref, "stale_evals": self.stale_evals,
                "train_chars": self.train_chars, "corpus": self.corpus.fingerprint,
                "mix_weight": self.mix_weight, "lineage": self.lineage}

    def save(self, name: str) -> None:
        path = self.out_dir / name
        try:
            save_checkpoint(path, self.model, self.vocab, self.config, self.meta(), optimizer=self.optimizer,
                            state=self.state, ngram_ids=None if self.ngram is None else self.train_ids)
        except OSError as e:
            raise TrainingError(
                f"cannot write checkpoint {path} at step {self.step} ({e.strerror or e}); "
                f"the previous {name}, if any, is intact"
            ) from None

    # ---- the loop ---------------------------------------------------------------------
    def info(self) -> RunInfo:
        return RunInfo(self.config, self.model.param_counts(), self.train_chars, len(self.val_ids), len(self.vocab),
                       self.batches.num_windows, self.batches.chars_per_window, self.out_dir, self.step,
                       self.budget.total_steps, self.last_val)

    def _spent(self) -> str | None:
        return self.budget.spent(self.step, self.elapsed, self.stale_evals)

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
        self.lr = self.schedule(self.step, self.epoch)
        self.optimizer.step(self.model.grad, self.lr)
        self.state = state
        self.step += 1
        self.batch += 1
        if self.batch == self.batches.num_windows:
            self.batch, self.epoch = 0, self.epoch + 1
        self.loss_sum += loss
        self.loss_count += 1
        return loss

    def seconds_per_step(self, steps: int = 3) -> float:
        """Time a few training steps after an untimed first one (it allocates the buffers).
        They change the model: for estimates before a run (a dry run), not during one."""
        self.train_step()
        t0 = time.perf_counter()
        for _ in range(steps):
            self.train_step()
        return (time.perf_counter() - t0) / steps

    def evaluate(self) -> dict:
        d = self.config.data
        mixed = {}
        if self.ngram is None:
            val = evaluate(self.model, self.val_ids, d.batch_size, d.seq_length)
        else:
            net = char_nats(self.model, self.val_ids, d.batch_size, d.seq_length)  # of val_ids[1 .. M]
            if self._val_kn_nats is None:
                self._val_kn_nats = self.ngram.nats(self.val_ids[1 : len(net) + 1], before=self.val_ids[:1])
            val, self.mix_weight = cross_fitted_nats(net, self._val_kn_nats)
            mixed = {"val_loss_net": float(net.mean()), "mix_weight": self.mix_weight}
        self.last_val = val
        record = {"step": self.step, "epoch": round(self.epoch + self.batch / self.batches.num_windows, 4),
                  "elapsed_s": round(self.elapsed, 3),
                  "train_loss": self.loss_sum / self.loss_count if self.loss_count else None,
                  "val_loss": val, "val_bpc": val / LN2, "lr": self.lr, **mixed}
        self.loss_sum, self.loss_count = 0.0, 0
        t = self.config.train
        if self.plateau_ref is None or val < self.plateau_ref - t.min_delta:
            self.plateau_ref, self.stale_evals = val, 0
        else:
            self.stale_evals += 1
        return record

    def run(self, should_stop: Callable[[], bool] = lambda: False) -> TrainResult:
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrainingError(f"{self.out_dir}: cannot create the output directory ({e.strerror})") from None
        with RunLock(self.out_dir):
            self._claim_directory()
            remove_stale_temporaries(self.out_dir, ".*.npz.*.tmp")
            for log in LOGS:
                _truncate_log(self.out_dir / log, self.step)
            for event in self.events:
                self._append("metrics.jsonl", event)
            return self._loop(should_stop)

    def _claim_directory(self) -> None:
        """A new run never replaces another run's files unless ``overwrite``; a resumed run
        writes into its own directory, or into one that holds no run."""
        if self.resumed_from is not None and self.resumed_from.parent.resolve() == self.out_dir.resolve():
            return
        found = [self.out_dir / f for f in RUN_FILES if (self.out_dir / f).exists()]
        if not found:
            return
        if not self.overwrite:
            raise RunExistsError(f"{self.out_dir} already holds a run ({describe_run(self.out_dir)}): continue it "
                                 f"with resume={self.out_dir}, write to another out_dir, or replace it with "
                                 "overwrite=True")
        for p in found:
            p.unlink()

    def _loop(self, should_stop) -> TrainResult:
        t_cfg, has_val = self.config.train, len(self.val_ids) >= 2
        self.reporter.start(self.info())
        reason = self._spent()
        chars_since, t_since = 0, time.perf_counter()
        try:
            while reason is None:
                t0 = time.perf_counter()
                loss = self.train_step()
                self.elapsed += time.perf_counter() - t0
                chars_since += self.batches.chars_per_window
                self.reporter.step(Progress(self.step, self.epoch + self.batch / self.batches.num_windows, loss))
                reason = self._spent()
                if has_val and (self.step % t_cfg.eval_every == 0 or reason is not None):
                    t0 = time.perf_counter()
                    record = self.evaluate()
                    self.elapsed += time.perf_counter() - t0
                    record["chars_per_s"] = round(chars_since / max(1e-9, time.perf_counter() - t_since), 1)
                    chars_since, t_since = 0, time.perf_counter()
                    self._append("metrics.jsonl", record)
                    self.reporter.evaluated(record)
                    if t_cfg.sample_length:
                        sample = self.sample()
                        self._append("samples.jsonl", sample)
                        self.reporter.sampled(sample)
                    if self.best_val is None or record["val_loss"] < self.best_val:
                        self.best_val = record["val_loss"]
                        self.save("best.npz")
                    reason = reason or self._spent()
                if self.step % t_cfg.checkpoint_every == 0 or reason is not None:
                    self.save("last.npz")
                if reason is None and should_stop():
                    reason = "interrupted"
                    self.save("last.npz")
            result = TrainResult(self.out_dir, self.step, self.epoch, self.best_val, self.last_val, reason)
            self.reporter.stopped(result)
        finally:
            self.reporter.close()
        return result

    def sample(self) -> dict:
        """A sample from the model as it is now, with the same seed and temperature at every
        evaluation (so samples from one run, or from two runs, compare)."""
        t = self.config.train
        [s] = generate(self.predictor(), self.vocab, "\n", t.sample_length, temperature=t.sample_temperature, seed=t.seed)
        return {"step": self.step, "epoch": round(self.epoch + self.batch / self.batches.num_windows, 4),
                "temperature": t.sample_temperature, "seed": t.seed, "prime": "\n", "text": s.text,
                "bits_per_char": s.bits_per_char}

    def predictor(self):
        """The model as sample and score will use it: mixed with the n-gram once a weight is fitted."""
        if self.ngram is None or self.mix_weight is None:
            return self.model
        return Mixture(self.model, self.ngram, self.mix_weight)

    def _append(self, name: str, record: dict) -> None:
        path = self.out_dir / name
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, allow_nan=False) + "\n")
        except OSError as e:
            raise TrainingError(f"cannot append to {path} at step {self.step} ({e.strerror or e})") from None


def run_checkpoint(path) -> Path:
    """What resuming from ``path`` reads: a checkpoint file, or a run directory's last.npz."""
    p = Path(path)
    if p.is_dir():
        if not (p / "last.npz").is_file():
            raise CheckpointError(f"{p}: run directory has no last.npz to resume")
        return p / "last.npz"
    if not p.exists():
        raise CheckpointError(f"{p}: checkpoint not found")
    return p


def describe_run(out_dir: Path) -> str:
    """'step 5,400, best val 1.4973 nats/char' for the run found in ``out_dir``."""
    for name in ("last.npz", "best.npz"):
        try:
            m = read_meta(out_dir / name)
            best = m.get("best_val")
            return f"step {int(m.get('step', 0)):,}" + (f", best val {best:.4f} nats/char" if isinstance(best, float) else "")
        except (CharlmError, OSError, TypeError, ValueError):
            continue
    try:
        lines = (out_dir / "metrics.jsonl").read_text(encoding="utf-8", errors="replace").splitlines()
        vals = [r for r in map(_json_or_none, lines) if isinstance(r, dict) and isinstance(r.get("val_loss"), float)]
        if vals:
            return f"step {vals[-1].get('step', 0):,}, best val {min(r['val_loss'] for r in vals):.4f} nats/char"
    except OSError:
        pass
    return "files " + ", ".join(f for f in RUN_FILES if (out_dir / f).exists())


def _json_or_none(line: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def _check_resumable(ck: Checkpoint, config: Config, path) -> None:
    """Only the train section may change on resume (to extend a run or change its cadence)."""
    for section in SECTIONS:
        if section != "train" and getattr(config, section) != getattr(ck.config, section):
            raise CheckpointError(
                f"{path}: cannot resume with a different {section} section; only train.* keys may change "
                "(resume without a config to use the checkpoint's)"
            )


def _truncate_log(path: Path, step: int) -> None:
    """Keep the records up to ``step`` (a resumed run rewrites what came after its checkpoint)
    and drop a torn last line left by a killed run."""
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


def train(config: Config, corpus_path, out_dir=None, reporter=None, should_stop: Callable[[], bool] = lambda: False,
          overwrite: bool = False) -> TrainResult:
    """Train a new model; see ``Trainer``."""
    return Trainer(config, corpus_path, out_dir, reporter, overwrite=overwrite).run(should_stop)
