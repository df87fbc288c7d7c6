"""The training loop: stateful truncated BPTT over char-rnn batches, with evaluations,
checkpoints and early stopping along the way.

Two ways in: ``Trainer(config, corpus, out_dir)`` starts a new run (from random weights, or
from a trained model's with ``start``), ``Trainer.resume(checkpoint, corpus)`` continues one
(resume.py). What a run knows of itself is one ``TrainState`` (state.py), saved in every
checkpoint; its evaluations are evaluation.py's; its directory, written by rank 0 alone, is
rundir.py's. A run is planned (its config, a recipe for --minutes or --from, its directory) by
plan.py, which the command line calls.

The library never prints: it reports through a ``Reporter`` the caller hands it.

With ``workers`` (parallel.py) the run is one rank of a data-parallel job: it trains its share
of the batch's streams, every rank takes the same averaged step, and rank 0 alone writes.
Every decision (stop, evaluate, save) is taken from values all ranks agree on, so the ranks
never wait on each other in different places.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..config import Config
from ..errors import CorpusError, TrainingError
from ..network.memory import check_fits, training_memory
from ..network.model import Model
from ..network.optim import clip_grad_norm, make_optimizer
from ..network.schedule import Budget, Schedule
from ..predict.checkpoint import save_checkpoint
from ..predict.mixture import Mixture
from ..predict.ngram import MAX_CHARS as MAX_NGRAM_CHARS
from ..predict.ngram import KneserNey
from ..text.batches import Batches, eval_sample
from ..text.corpus import Corpus, load_corpus, split
from ..use.sample import generate
from .evaluation import Evaluator
from .parallel import Workers
from .rundir import BEST, LAST, METRICS, SAMPLES, RunDir, default_dir
from .state import Progress, Reporter, RunInfo, TrainResult, TrainState


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
        self.config, self.out_dir = config, Path(out_dir or default_dir(config.name))
        self.run_dir = RunDir(self.out_dir, w)
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
        self.optimizer = make_optimizer(self.model.flat, config.train)
        self.budget = Budget(config.train, self.batches.num_windows)
        self.schedule = Schedule(config.train, self.budget.total_steps)
        self.mixed = bool(config.model.ngram_order)
        self.ngram = self._ngram() if self.mixed else None  # rank 0's alone: it scores and saves it
        self.evaluator = Evaluator(self.model, self.ngram, config, w, self.eval_ids, self.val_ids)
        self.state = TrainState(rng=np.random.default_rng(config.train.seed))
        self.hidden = None  # the hidden state carried into the next window
        self.model.init(self.state.rng)  # the same draws on every rank: one model
        if w.rank:
            self.state.rng = np.random.default_rng([config.train.seed, w.rank])  # its own dropout masks
        if start is not None:
            for name, a in start.params.items():
                self.model.params[name][...] = a
            self.state.lineage = start.lineage

    @staticmethod
    def resume(checkpoint, corpus, config: Config | None = None, out_dir=None, reporter: Reporter | None = None,
               allow_new_corpus: bool = False, workers: Workers | None = None) -> Trainer:
        """Continue the run saved in ``checkpoint`` exactly (resume.py); ``config`` may change
        train.* keys only."""
        from .resume import resume

        return resume(checkpoint, corpus, config, out_dir, reporter, allow_new_corpus, workers)

    def _ngram(self) -> KneserNey | None:
        if self.train_chars > MAX_NGRAM_CHARS:
            raise CorpusError(f"{self.corpus.fingerprint['path']}: {self.train_chars:,} training characters; the "
                              f"n-gram mixture (model.ngram_order) counts at most {MAX_NGRAM_CHARS:,}: set "
                              "model.ngram_order=0")
        if not self.workers.root:
            return None
        return KneserNey(self.train_ids, self.config.model.ngram_order, len(self.vocab))

    # ---- checkpoints ------------------------------------------------------------------
    def meta(self) -> dict:
        return {**self.state.to_meta(), "train_chars": self.train_chars, "corpus": self.corpus.fingerprint}

    def save(self, name: str) -> None:
        """Write a checkpoint (rank 0), with every rank's hidden state and RNG."""
        w, st = self.workers, self.state
        hidden = None if self.hidden is None else w.gather_state(self.hidden)
        rngs = w.gather_json(st.rng.bit_generator.state)

        def write(path):
            st.rank_rngs = rngs[1:] or None
            try:
                save_checkpoint(path, self.model, self.vocab, self.config, self.meta(), optimizer=self.optimizer,
                                state=hidden, ngram_ids=None if self.ngram is None else self.train_ids)
            finally:
                st.rank_rngs = None

        self.run_dir.save(name, write, st.step)

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
                f"lower train.lr or set a stronger train.grad_clip ({BEST} and the last good {LAST} are kept)"
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

    def evaluate(self) -> dict:
        """The loss on the evaluation sample of the validation split, as a metrics record
        (evaluation.py); the run's state takes its results."""
        return self.evaluator.evaluate(self.state, self.epochs())

    def run(self, should_stop: Callable[[], bool] = lambda: False, full_eval: bool = False) -> TrainResult:
        """Train until a budget is spent or ``should_stop()``; with ``full_eval``, then score the
        whole validation split once (metrics.jsonl gets its record)."""
        with self.run_dir.open(self.overwrite, self.resumed_from, self.state.step, self.events):
            try:
                return self._loop(should_stop, full_eval)
            finally:
                self.reporter.close()

    def _loop(self, should_stop, full_eval) -> TrainResult:
        t_cfg, has_val, st = self.config.train, len(self.val_ids) >= 2, self.state
        self.reporter.start(self.info())
        reason = self._spent()
        chars_since, t_since = 0, time.perf_counter()
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
                self.run_dir.log(METRICS, record, st.step)
                self.reporter.evaluated(record)
                if t_cfg.sample_length:
                    self.workers.on_root(self._log_sample)
                if st.best_val is None or record["val_loss"] < st.best_val:
                    st.best_val = record["val_loss"]
                    self.save(BEST)
                reason = reason or self._spent()
            if st.step % t_cfg.checkpoint_every == 0 or reason is not None:
                self.save(LAST)
        if full_eval and has_val and reason != "interrupted":
            record = self.evaluator.evaluate_full(st.step)
            self.run_dir.log(METRICS, record, st.step)
            self.reporter.evaluated_full(record)
        result = TrainResult(self.out_dir, st.step, st.epoch, st.best_val, st.last_val, reason)
        self.reporter.stopped(result)
        return result

    def _log_sample(self) -> None:
        record = self.sample()
        self.run_dir.append(SAMPLES, record, self.state.step)
        self.reporter.sampled(record)

    def sample(self) -> dict:
        """A sample from the model as it is now, with the same seed and temperature at every
        evaluation (so samples from one run, or from two runs, compare). They start after a
        newline, or after the corpus's first character where it has no newline."""
        t = self.config.train
        prime = "\n" if "\n" in self.vocab.chars else self.vocab.chars[int(self.corpus.ids[0])]
        [s] = generate(self.predictor(), self.vocab, prime, t.sample_length, temperature=t.sample_temperature,
                       seed=t.seed)
        return {"step": self.state.step, "epoch": round(self.epochs(), 4), "temperature": t.sample_temperature,
                "seed": t.seed, "prime": prime, "text": s.text, "bits_per_char": s.bits_per_char}

    def predictor(self):
        """The model as sample and score will use it: mixed with the n-gram once a weight is fitted."""
        if self.ngram is None or self.state.mix_weight is None:
            return self.model
        return Mixture(self.model, self.ngram, self.state.mix_weight)


def train(config: Config, corpus_path, out_dir=None, reporter=None, should_stop: Callable[[], bool] = lambda: False,
          overwrite: bool = False) -> TrainResult:
    """Train a new model; see ``Trainer``."""
    return Trainer(config, corpus_path, out_dir, reporter, overwrite=overwrite).run(should_stop)
