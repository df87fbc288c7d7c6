"""The training loop: stateful truncated BPTT over char-rnn batches, evaluation, checkpoints,
exact resume, early stopping.

Two ways in: ``Trainer(config, corpus, out_dir)`` starts a new run (from random weights, or
from a trained model's with ``start``), ``Trainer.resume(checkpoint, corpus)`` continues one.
What the run directory holds, and how it is read and written: rundir.py. A run's progress is
one ``TrainState``, saved in every checkpoint and restored from it.

The library never prints: it reports through a ``Reporter`` the caller hands it (the CLI
passes a tqdm one; tests and notebooks pass none).

With ``workers`` (parallel.py) the run is one rank of a data-parallel job: it trains its share
of the batch's streams, every rank takes the same averaged step, and rank 0 alone writes the
run directory. Every decision (stop, evaluate, save) is taken from values all ranks agree on,
so the ranks never wait on each other in different places.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .config import SECTIONS, Config
from .data import Batches, Corpus, describe_fingerprint, eval_sample, eval_streams, load_corpus, split
from .errors import CheckpointError, CorpusError, TrainingError
from .memory import check_fits, training_memory
from .mixture import Mixture, cross_fitted_nats
from .model import Model
from .ngram import KneserNey
from .optim import clip_grad_norm, make_optimizer
from .parallel import Workers
from .rundir import RunDir, checkpoint_path
from .runlock import RunLock
from .sample import generate
from .schedule import Budget, Schedule
from .score import LN2, char_nats

MAX_NGRAM_CHARS = 20_000_000  # the n-gram of a mixture is stored in every checkpoint; beyond this a network wins anyway


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

    def evaluated_full(self, record: dict) -> None: ...

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


@dataclass
class TrainState:
    """A run's progress: everything a checkpoint saves besides arrays (weights, optimizer
    moments, hidden state), under the same names in its metadata, and restores exactly."""

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
        """``CheckpointError`` when a field is missing or of the wrong kind."""
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


class Trainer:
    """Everything one run needs; ``run()`` trains until a budget is spent or ``should_stop()``."""

    def __init__(self, config: Config, corpus, out_dir=None, reporter: Reporter | None = None,
                 overwrite: bool = False, start=None, vocab=None, workers: Workers | None = None):
        """A new run of ``config`` on ``corpus`` (a path or a ``Corpus``; a path is encoded with
        ``vocab`` when given) into ``out_dir`` (default runs/<config name>). ``start`` (a
        ``finetune.Start``) gives the first weights and the lineage of a fine-tuned run;
        without it they are drawn at random. ``workers``: this process's rank of a
        data-parallel job (parallel.py); without it, one process."""
        self.workers = w = workers or Workers()
        w.check_divides(config.data.batch_size)
        self.reporter = reporter or Reporter()
        self.config, self.out_dir = config, Path(out_dir or Path("runs") / config.name)
        self.run_dir = RunDir(self.out_dir)
        self.overwrite, self.resumed_from, self.events = overwrite, None, []
        self.corpus = corpus if isinstance(corpus, Corpus) else w.root_first(lambda: load_corpus(corpus, vocab=vocab))
        self.vocab = self.corpus.vocab
        if len(self.vocab) < 2:
            raise CorpusError(
                f"{self.corpus.fingerprint['path']}: the corpus has a single distinct character "
                f"({self.vocab.chars[0]!r}); there is nothing to predict"
            )
        self.memory = training_memory(config, len(self.vocab), len(self.corpus),
                                      mapped=isinstance(self.corpus.ids, np.memmap), workers=w.size, rank=w.rank)
        check_fits(self.memory, ranks=w.local_size)  # before the model, optimizer or buffers are allocated
        d = config.data
        self.train_ids, self.val_ids = split(self.corpus.ids, d.val_fraction)
        # What each periodic evaluation scores: the whole split, or a fixed sample of it (one
        # stretch per evaluation stream) when train.eval_chars is smaller.
        self.eval_ids = eval_sample(self.val_ids, config.train.eval_chars, d.batch_size)
        self.batches = Batches(self.train_ids, d.batch_size, d.seq_length, name=self.corpus.fingerprint["path"],
                               streams=w.share(d.batch_size))
        self.chars_per_step = d.batch_size * d.seq_length  # of all ranks together
        self.train_chars = len(self.train_ids)
        self.model = Model(config.model, len(self.vocab))
        self.optimizer = make_optimizer(self.model.flat, config.train, self.model.bias_slices())
        self.budget = Budget(config.train, self.batches.num_windows)
        self.schedule = Schedule(config.train, self.budget.total_steps)
        self.mixed = bool(config.model.ngram_order)
        self.ngram = self._ngram() if self.mixed else None  # rank 0's alone: it scores and saves it
        self._val_kn_nats = None  # the n-gram's nats on the validation split: fixed, computed once
        self.state = TrainState(rng=np.random.default_rng(config.train.seed))
        self.hidden = None  # the hidden state carried into the next window
        self.model.init(self.state.rng)  # the same draws on every rank: one model
        if w.rank:
            self.state.rng = np.random.default_rng([config.train.seed, w.rank])  # its own dropout masks
        if start is not None:
            for name, a in start.params.items():
                self.model.params[name][...] = a
            self.state.lineage = start.lineage

    @classmethod
    def resume(cls, checkpoint, corpus, config: Config | None = None, out_dir=None,
               reporter: Reporter | None = None, allow_new_corpus: bool = False,
               workers: Workers | None = None) -> Trainer:
        """Continue the run saved in ``checkpoint`` (a Checkpoint, a last.npz, or a run directory):
        same step, optimizer state, schedule, data position, hidden state and RNG. ``config`` may
        change train.* keys only."""
        ck = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint_path(checkpoint, resume=True))
        path = Path(ck.meta.get("path", "last.npz"))
        config = config or ck.config
        _check_resumable(ck, config, path)
        config = Config.from_dict(config.to_dict(), name=ck.config.name)
        # The corpus is encoded with the checkpoint's vocabulary; a character it lacks is a
        # CorpusError naming it.
        tr = cls(config, corpus, out_dir or path.parent, reporter, vocab=ck.vocab, workers=workers)
        tr.resumed_from = path
        tr._restore(ck, allow_new_corpus)
        return tr

    def _ngram(self) -> KneserNey | None:
        if self.train_chars > MAX_NGRAM_CHARS:
            raise CorpusError(f"{self.corpus.fingerprint['path']}: {self.train_chars:,} training characters; the "
                              f"n-gram mixture (model.ngram_order) counts at most {MAX_NGRAM_CHARS:,}: set "
                              "model.ngram_order=0")
        if not self.workers.root:
            return None
        return KneserNey(self.train_ids, self.config.model.ngram_order, len(self.vocab))

    # ---- checkpoint state -------------------------------------------------------------
    def _restore(self, ck: Checkpoint, allow_new_corpus: bool) -> None:
        ck.load_params(self.model)
        if not ck.optim:
            raise CheckpointError("checkpoint has no optimizer state; it cannot be resumed (sampling and scoring still work)")
        for slot, arrays in ck.optim.items():
            if slot not in self.optimizer.state:  # train.ema turned off on resume
                continue
            for name, a in arrays.items():
                self.optimizer.state[slot][self.model.slices[name]] = a.reshape(-1)
        if "ema" in self.optimizer.state and "ema" not in ck.optim:  # turned on: the average starts here
            self.optimizer.state["ema"][...] = self.model.flat
        try:
            self.optimizer.t = int(ck.meta["optimizer_t"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"checkpoint lacks training progress ({e}); it cannot be resumed") from None
        self.state = st = TrainState.from_meta(ck.meta)
        self._restore_ranks(st)
        old, new = ck.meta.get("corpus"), self.corpus.fingerprint
        if isinstance(old, dict) and (old.get("chars"), old.get("sha256")) != (new["chars"], new["sha256"]):
            if not allow_new_corpus:
                raise CorpusMismatchError(f"{describe_fingerprint(new)} is not the corpus this run was trained on, "
                                          f"{describe_fingerprint(old)}; {{allow_new_corpus}} fine-tunes on it",
                                          allow_new_corpus=True)
            # Fine-tuning: the old data position means nothing in the new text; start its first epoch.
            st.batch = 0
            self.events.append({"step": st.step, "event": "new_corpus", "corpus": new, "previous": old})
        if not 0 <= st.batch < self.batches.num_windows:
            raise CheckpointError(f"checkpoint data position {st.batch} is outside this corpus's {self.batches.num_windows} windows")
        self.hidden = self.workers.local_state(ck.state) if st.batch > 0 and ck.state is not None else None

    def _restore_ranks(self, st: TrainState) -> None:
        """Each rank's RNG as the checkpoint saved it; with another worker count than it was
        saved with, ranks 1.. draw new streams (the hidden state still carries over exactly)."""
        w, saved = self.workers, 1 + len(st.rank_rngs or [])
        if w.rank and saved == w.size:
            st.rng.bit_generator.state = st.rank_rngs[w.rank - 1]
        elif w.rank:
            st.rng = np.random.default_rng([self.config.train.seed, w.rank, st.step])
        if saved != w.size:
            self.events.append({"step": st.step, "event": "workers", "workers": w.size, "previous": saved})
        st.rank_rngs = None

    def meta(self) -> dict:
        return {**self.state.to_meta(), "train_chars": self.train_chars, "corpus": self.corpus.fingerprint}

    def save(self, name: str) -> None:
        """Write a checkpoint (rank 0), with every rank's hidden state and RNG."""
        path, w, st = self.out_dir / name, self.workers, self.state
        hidden = None if self.hidden is None else w.gather_state(self.hidden)
        rngs = w.gather_json(st.rng.bit_generator.state)
        with w.together():
            if not w.root:
                return
            st.rank_rngs = rngs[1:] or None
            try:
                save_checkpoint(path, self.model, self.vocab, self.config, self.meta(), optimizer=self.optimizer,
                                state=hidden, ngram_ids=None if self.ngram is None else self.train_ids)
            except OSError as e:
                raise TrainingError(
                    f"cannot write checkpoint {path} at step {st.step} ({e.strerror or e}); "
                    f"the previous {name}, if any, is intact"
                ) from None
            finally:
                st.rank_rngs = None

    def _append(self, name: str, record: dict) -> None:
        """A line of metrics.jsonl or samples.jsonl (rank 0)."""
        with self.workers.together():
            if self.workers.root:
                self.run_dir.append(name, record, self.state.step)

    # ---- the loop ---------------------------------------------------------------------
    def info(self) -> RunInfo:
        return RunInfo(self.config, self.model.param_counts(), self.train_chars, len(self.val_ids), len(self.vocab),
                       self.batches.num_windows, self.chars_per_step, self.out_dir, self.state.step,
                       self.budget.total_steps, self.state.last_val)

    def _spent(self, stop: bool = False) -> str | None:
        """Why the run ends now ("interrupted" when ``stop`` on any rank), or None. Every rank
        takes rank 0's clock first, so all of them decide alike."""
        st = self.state
        st.elapsed_s, stop = self.workers.agree(st.elapsed_s, stop)
        return "interrupted" if stop else self.budget.spent(st.step, st.elapsed_s, st.stale_evals)

    def epochs(self) -> float:
        return self.state.epochs(self.batches.num_windows)

    def train_step(self) -> float:
        """One window: forward, BPTT, clipping, update. Advances the data position and the
        run's time (``state.elapsed_s``), which the schedule reads."""
        t0 = time.perf_counter()
        st = self.state
        if st.batch == 0 or self.hidden is None:
            self.hidden = self.model.zero_state(self.batches.B)  # reset at each epoch
        x, y = self.batches.window(st.batch)
        loss, hidden = self.model.loss_and_grad(x, y, self.hidden, st.rng)
        self.workers.mean_(self.model.grad)  # the whole batch's gradient, on every rank
        loss = self.workers.mean(loss)
        norm = clip_grad_norm(self.model.grad, self.config.train.grad_clip)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            raise self.workers.alike(TrainingError(
                f"step {st.step + 1}: {'loss' if not math.isfinite(loss) else 'gradient norm'} is not finite; "
                "lower train.lr or set a stronger train.grad_clip (best.npz and the last good last.npz are kept)"
            ))
        st.lr = self.schedule(st.step, st.epoch, st.elapsed_s)
        self.optimizer.step(self.model.grad, st.lr)
        self.hidden = hidden
        st.step += 1
        st.batch += 1
        if st.batch == self.batches.num_windows:
            st.batch, st.epoch = 0, st.epoch + 1
        st.loss_sum += loss
        st.loss_count += 1
        st.elapsed_s += time.perf_counter() - t0
        return loss

    def seconds_per_step(self, steps: int = 3) -> float:
        """Time a few training steps after an untimed first one (it allocates the buffers).
        They change the model: for estimates before a run (a dry run), not during one."""
        self.train_step()
        t0 = time.perf_counter()
        for _ in range(steps):
            self.train_step()
        return self.workers.seconds((time.perf_counter() - t0) / steps)

    @contextmanager
    def averaged(self):
        """``with trainer.averaged():`` the model holds train.ema's averaged weights instead of
        the trained ones (nothing changes without train.ema, or before the first step)."""
        ema = self.optimizer.state.get("ema")
        if ema is None or self.optimizer.t == 0:
            yield self.model
            return
        trained = self.model.flat.copy()
        np.copyto(self.model.flat, ema)
        try:
            yield self.model
        finally:
            np.copyto(self.model.flat, trained)

    def evaluate(self) -> dict:
        """The loss on the evaluation sample of the validation split (``eval_ids``; the averaged
        weights', with train.ema), as a metrics record."""
        with self.averaged():
            return self._evaluate()

    def evaluate_full(self) -> dict:
        """The whole validation split's loss, once, as a metrics.jsonl event (``val_loss_full``,
        and the network's alone with a mixture); the run's evaluation state is untouched."""
        with self.averaged():
            val, net, _, _ = self._losses(self.val_ids)
        return {"event": "full_eval", "step": self.state.step, "val_chars_full": len(self.val_ids),
                "val_loss_full": val, **({} if net is None else {"val_loss_net_full": net})}

    def _losses(self, ids, kn_nats=None):
        """Mean nats/char of ``ids`` -> (the predictor's loss, the network's alone or None
        without a mixture, the mixture's fitted weight or None, the n-gram's nats of ids, which
        a caller passes back as ``kn_nats`` to skip recomputing them)."""
        d, w = self.config.data, self.workers
        share = w.share(eval_streams(len(ids), d.batch_size, d.seq_length))  # the ranks split the streams
        nats = w.gather(char_nats(self.model, ids, d.batch_size, d.seq_length, share))  # of ids[1 .. M], rank 0
        val = net = weight = None
        if w.root and not self.mixed:
            val = float(nats.mean())
        elif w.root:
            if kn_nats is None:
                kn_nats = self.ngram.nats(ids[1 : len(nats) + 1], before=ids[:1])
            val, weight = cross_fitted_nats(nats, kn_nats)
            net = float(nats.mean())
        val, net, weight = w.broadcast([val, net, weight])
        return val, net, weight, kn_nats

    def _evaluate(self) -> dict:
        st = self.state
        self.workers.check_same(self.model.flat, st.step)
        val, net, weight, self._val_kn_nats = self._losses(self.eval_ids, self._val_kn_nats)
        mixed = {} if net is None else {"val_loss_net": net, "mix_weight": weight}
        if net is not None:
            st.mix_weight, st.net_val = weight, net
        st.last_val = val
        record = {"step": st.step, "epoch": round(self.epochs(), 4), "elapsed_s": round(st.elapsed_s, 3),
                  "train_loss": st.loss_sum / st.loss_count if st.loss_count else None,
                  "val_loss": val, "val_bpc": val / LN2, "lr": st.lr, **mixed}
        st.loss_sum, st.loss_count = 0.0, 0
        t = self.config.train
        # Early stopping watches the network: while it is worse than the n-gram, the mixture's
        # loss stays near the n-gram's and would look like a plateau.
        ref = mixed.get("val_loss_net", val)
        if st.plateau_ref is None or ref < st.plateau_ref - t.min_delta:
            st.plateau_ref, st.stale_evals = ref, 0
        else:
            st.stale_evals += 1
        return record

    def run(self, should_stop: Callable[[], bool] = lambda: False, full_eval: bool = False) -> TrainResult:
        """Train until a budget is spent or ``should_stop()``; with ``full_eval``, then score the
        whole validation split once (``evaluate_full``; metrics.jsonl gets its record)."""
        with ExitStack() as stack:
            with self.workers.together():
                if self.workers.root:  # the only writer
                    self.run_dir.create()
                    stack.enter_context(RunLock(self.out_dir))
                    self.run_dir.claim(self.overwrite, self.resumed_from)
                    self.run_dir.prepare(self.state.step)
                    for event in self.events:
                        self.run_dir.append("metrics.jsonl", event, self.state.step)
            return self._loop(should_stop, full_eval)

    def _loop(self, should_stop, full_eval) -> TrainResult:
        t_cfg, has_val, st = self.config.train, len(self.val_ids) >= 2, self.state
        self.reporter.start(self.info())
        reason = self._spent()
        chars_since, t_since = 0, time.perf_counter()
        try:
            while reason is None:
                loss = self.train_step()
                chars_since += self.chars_per_step
                self.reporter.step(Progress(st.step, self.epochs(), loss))
                reason = self._spent(should_stop())
                if has_val and reason != "interrupted" and (st.step % t_cfg.eval_every == 0 or reason is not None):
                    t0 = time.perf_counter()
                    record = self.evaluate()
                    st.elapsed_s += time.perf_counter() - t0
                    record["chars_per_s"] = round(chars_since / max(1e-9, time.perf_counter() - t_since), 1)
                    chars_since, t_since = 0, time.perf_counter()
                    self._append("metrics.jsonl", record)
                    self.reporter.evaluated(record)
                    if t_cfg.sample_length:
                        with self.workers.together():
                            if self.workers.root:
                                sample = self.sample()
                                self.run_dir.append("samples.jsonl", sample, st.step)
                                self.reporter.sampled(sample)
                    if st.best_val is None or record["val_loss"] < st.best_val:
                        st.best_val = record["val_loss"]
                        with self.averaged():
                            self.save("best.npz")
                    reason = reason or self._spent()
                if st.step % t_cfg.checkpoint_every == 0 or reason is not None:
                    self.save("last.npz")
            if full_eval and has_val and reason != "interrupted":
                record = self.evaluate_full()
                self._append("metrics.jsonl", record)
                self.reporter.evaluated_full(record)
            result = TrainResult(self.out_dir, st.step, st.epoch, st.best_val, st.last_val, reason)
            self.reporter.stopped(result)
        finally:
            self.reporter.close()
        return result

    def sample(self) -> dict:
        """A sample from the model as it is now, with the same seed and temperature at every
        evaluation (so samples from one run, or from two runs, compare). They start after a
        newline, or after the corpus's first character where it has no newline."""
        t = self.config.train
        prime = "\n" if "\n" in self.vocab.chars else self.vocab.chars[int(self.corpus.ids[0])]
        with self.averaged():
            [s] = generate(self.predictor(), self.vocab, prime, t.sample_length, temperature=t.sample_temperature,
                           seed=t.seed)
        return {"step": self.state.step, "epoch": round(self.epochs(), 4), "temperature": t.sample_temperature,
                "seed": t.seed, "prime": prime, "text": s.text, "bits_per_char": s.bits_per_char}

    def predictor(self):
        """The model as sample and score will use it: mixed with the n-gram once a weight is fitted."""
        if self.ngram is None or self.state.mix_weight is None:
            return self.model
        return Mixture(self.model, self.ngram, self.state.mix_weight)


def _check_resumable(ck: Checkpoint, config: Config, path) -> None:
    """Only the train section may change on resume (to extend a run or change its cadence)."""
    for section in SECTIONS:
        if section != "train" and getattr(config, section) != getattr(ck.config, section):
            raise CheckpointError(
                f"{path}: cannot resume with a different {section} section; only train.* keys may change "
                "(resume without a config to use the checkpoint's)"
            )


def train(config: Config, corpus_path, out_dir=None, reporter=None, should_stop: Callable[[], bool] = lambda: False,
          overwrite: bool = False) -> TrainResult:
    """Train a new model; see ``Trainer``."""
    return Trainer(config, corpus_path, out_dir, reporter, overwrite=overwrite).run(should_stop)
