"""``charlm train``: the progress reporter, signals, --minutes and --dry-run."""

from __future__ import annotations

import os
import signal
import sys
import time

import click
from tqdm import tqdm

from ..predict.baseline import corpus_baseline
from ..predict.checkpoint import BUNDLED_NAME
from ..predict.ngram import MAX_CHARS as MAX_NGRAM_CHARS
from ..system import format_bytes
from ..text.audit import show_char
from ..text.corpus import describe_fingerprint
from ..text.sources import CorpusSource
from ..threads import under_launcher
from ..training import parallel
from ..training.launch import launch, quiet_if_orphaned, watch_launcher
from ..training.plan import describe_run, plan
from ..training.state import Reporter
from ..training.trainer import Trainer
from ..use.score import LN2
from .base import Finite, dumps, main, option


class TqdmReporter(Reporter):
    """Prints the resolved config and parameter counts, then a progress bar and one line per
    eval (stderr); with ``as_json``, one JSON object per evaluation and at the end (stdout)."""

    def __init__(self, quiet: bool = False, as_json: bool = False):
        self.quiet, self.as_json = quiet or as_json, as_json
        self.bar, self._ema, self._shown = None, None, 0.0
        self.baseline = None  # the n-gram Baseline, when the CLI computed one

    def start(self, info):
        if not self.quiet:
            click.echo(f"# config {info.config.name} (resolved)\n{info.config.to_yaml().rstrip()}")
            total = sum(n for _, n in info.param_counts)
            click.echo(f"parameters: {total:,} ({', '.join(f'{g} {n:,}' for g, n in info.param_counts)})")
            click.echo(f"corpus: {info.train_chars:,} training and {info.val_chars:,} validation characters, "
                       f"vocabulary {info.vocab_size}, {info.windows_per_epoch:,} windows per epoch")
            click.echo(f"output: {info.out_dir}" + (f" (resuming at step {info.step})" if info.step else ""))
            b = self.baseline
            if b is not None:
                click.echo(f"baseline on the validation split: {b.order}-gram Kneser-Ney {b.kneser_ney_bpc:.4f} "
                           f"bits/char ({b.kneser_ney_bpc * LN2:.4f} nats), unigram {b.unigram_bpc:.4f} bits/char")
        elif self.as_json and self.baseline is not None:
            click.echo(dumps({"event": "baseline", **self.baseline.to_dict()}))
        self.windows, self.cpw = info.windows_per_epoch, info.chars_per_window
        self.bar = tqdm(total=info.total_steps, initial=info.step, unit="step", dynamic_ncols=True,
                        disable=self.quiet, desc="train", file=sys.stderr)
        self.val = info.last_val

    def step(self, p):
        self._ema = p.loss if self._ema is None else 0.95 * self._ema + 0.05 * p.loss
        self.bar.update(1)
        now = time.monotonic()
        if self.quiet or now - self._shown < 0.5:  # formatting the postfix costs more than a tiny model's step
            return
        self._shown = now
        rate = self.bar.format_dict.get("rate") or 0.0
        post = {"epoch": f"{p.epoch:.2f}", "loss": f"{self._ema:.3f}",
                "val": "-" if self.val is None else f"{self.val:.3f}", "chars/s": f"{rate * self.cpw:,.0f}"}
        self.bar.set_postfix(post, refresh=False)

    def evaluated(self, r):
        self.val = r["val_loss"]
        if self.as_json:
            click.echo(dumps({"event": "eval", **r}))
            return
        train = "-" if r["train_loss"] is None else f"{r['train_loss']:.4f}"
        b = self.baseline
        passed = " (below the n-gram baseline)" if b and r["val_loss"] < b.kneser_ney_bpc * LN2 else ""
        self._say(f"step {r['step']} epoch {r['epoch']:.2f}: train {train}, val {r['val_loss']:.4f} nats "
                  f"({r['val_bpc']:.4f} bits) per char{passed}, lr {r['lr']:.3g}, {r['chars_per_s']:,.0f} chars/s")

    def evaluated_full(self, r):
        if self.as_json:
            click.echo(dumps(r))
            return
        net = f" (network alone {r['val_loss_net_full']:.4f})" if "val_loss_net_full" in r else ""
        self._say(f"the whole validation split ({r['val_chars_full']:,} characters) at step {r['step']}: "
                  f"{r['val_loss_full']:.4f} nats per char{net}")

    def sampled(self, s):
        if self.as_json:
            click.echo(dumps({"event": "sample", **s}))
            return
        self._say(f"sample at step {s['step']}: {s['text'][:200].replace(chr(10), ' / ')}")

    def stopped(self, result):
        quiet_if_orphaned()  # a rank whose launcher is gone: what it says next would go to a closed pipe
        if self.as_json:
            click.echo(dumps({"event": "stopped", **result.to_dict()}))

    def _say(self, text):
        if not self.quiet:
            tqdm.write(text, file=sys.stderr)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class _StopFlag:
    """SIGINT/SIGTERM ask the trainer to stop after the current step (and write last.npz)."""

    active: _StopFlag | None = None  # the one installed now, for a rank's watch of its launcher
    pending = False  # a stop asked for before training began, to take effect when it does

    def __init__(self):
        self.signum = signal.SIGINT if _StopFlag.pending else None

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        _StopFlag.active = self
        return self

    @classmethod
    def request(cls, later: bool = False) -> bool:
        """Stop as SIGINT would, from another thread (a rank's watch of its launcher): True
        when a trainer is running to stop, or with ``later`` (it stops when it begins); False
        when there is none yet."""
        flag = cls.active
        if flag is None:
            cls.pending = cls.pending or later
            return later
        if flag.signum is None:
            flag.signum = signal.SIGINT
        return True

    def _handle(self, signum, frame):
        if self.signum is not None:  # a second signal: stop now (checkpoints are written atomically)
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        _StopFlag.active = None
        for s, h in self._old.items():
            signal.signal(s, h)

    def __call__(self):
        return self.signum is not None


STOP_REASONS = {"early_stopping": "early stopping: no validation improvement of at least train.min_delta "
                                  "in train.patience evaluations; best.npz holds the best model"}


@main.command()
@click.argument("corpus", nargs=-1, required=True, type=click.Path(path_type=str))
@option("--include", multiple=True, metavar="GLOB",
        help="In a directory, read only files whose path under it matches GLOB (repeatable; * also matches /, "
             "so '*.py' finds every Python file).")
@option("--exclude", multiple=True, metavar="GLOB", help="In a directory, skip files whose path under it matches "
        "GLOB (repeatable), e.g. 'tests/*'.")
@option("--config", "config_path", type=click.Path(path_type=str), default=None,
        show_default="built-in defaults", help="YAML config with sections model, data, train (every key optional).")
@option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
        help="Override one config key, e.g. --set train.lr=0.001 (repeatable).")
@option("--out", "out_dir", type=click.Path(path_type=str), default=None,
        show_default="runs/<config name>; runs/<corpus>-from-<source> with --from and no --config; the resumed run's "
                     "directory",
        help="Run directory for last.npz, best.npz and metrics.jsonl.")
@option("--resume", default=None, metavar="CHECKPOINT|RUN_DIR|auto",
        help="Continue a run: its last.npz, its directory, or 'auto' (the run in the output directory, "
             "if there is one; otherwise start it).")
@option("--overwrite", is_flag=True, help="Replace the run already in the output directory.")
@option("--from", "source", default=None, metavar="CHECKPOINT|RUN_DIR|bundled",
        help="Fine-tune: start a new run from a trained model's weights (a checkpoint, a run directory, or 'bundled' "
             "for the model that ships with charlm), which is only read. The model keeps its size (dropout may "
             "change), the vocabulary grows by the corpus's new characters, and the learning rate and schedule "
             "follow a fine-tuning recipe (sized by --minutes when given).")
@option("--allow-new-corpus", is_flag=True,
        help="With --resume: continue the same run (optimizer state, schedule) on a different corpus; logged in "
             "metrics.jsonl. --from starts a fresh fine-tuning run instead.")
@option("--minutes", type=Finite(0, 10080, lo_open=True), default=None, metavar="N",
        help="Train for N minutes with the model and schedule charlm chooses for that budget on this machine and "
             "this corpus (it times the candidates first); --config and --set still override any choice.")
@option("--dry-run", is_flag=True,
        help="Show the resolved config, a corpus and vocabulary audit, parameters, memory and time per epoch; "
             "train nothing, write no run (a corpus of 16 MiB or more is encoded into the cache, as a run would).")
@option("--full-eval", is_flag=True,
        help="When training stops, score the whole validation split once (periodic evaluations score "
             "train.eval_chars of it); with --resume on a finished run, only that.")
@option("--json", "as_json", is_flag=True,
        help="JSON Lines on stdout: one object per evaluation and one when training stops (no progress bar).")
@option("--quiet", "-q", is_flag=True, help="No config dump, progress bar or eval lines.")
@option("--workers", type=click.IntRange(1, 4096), default=None, show_default="1, or the ranks mpiexec started", metavar="N",
        help="Train as N processes on this machine (data-parallel, one BLAS thread each, data.batch_size / N "
             "streams each; needs charlm[mpi]). Under mpiexec, the ranks it started are the workers, and N must "
             "equal them.")
def train(corpus, include, exclude, config_path, overrides, out_dir, resume, overwrite, source, allow_new_corpus,
          minutes, dry_run, full_eval, as_json, quiet, workers):
    """Train a model on CORPUS: one or more UTF-8 files or directories. A directory is read
    recursively in sorted order; files that are not UTF-8 text are skipped, and a line says
    which.

    A directory that holds a run is never overwritten unless --overwrite is given.
    Every config key and its default: charlm keys.
    """
    if source and resume:
        raise click.UsageError("--from starts a new run from a model and --resume continues a run: give one")
    if resume and overwrite:
        raise click.UsageError("--resume continues a run and --overwrite replaces it: give one")
    if allow_new_corpus and not resume:
        raise click.UsageError("--allow-new-corpus applies to --resume")
    if minutes is not None and resume:
        raise click.UsageError("--minutes chooses a new run's model; a resumed run keeps its own (extend it with "
                               "--set train.max_minutes=...)")
    if workers is not None and workers > 1 and not under_launcher():
        sys.exit(launch(workers, sys.argv[1:]))
    w = parallel.current()
    if w.size > 1:
        watch_launcher(_StopFlag.request)
    if w.size > 1 and workers not in (None, w.size):
        if not w.root:  # rank 0 says why
            sys.exit(2)
        raise click.UsageError(f"--workers {workers}, but mpiexec started {w.size} ranks: give the same number, "
                               "or leave --workers out under mpiexec")
    if not w.root:  # rank 0 speaks for the job
        quiet, as_json = True, False
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the rest of this process)
    corpus = CorpusSource(tuple(corpus), tuple(include), tuple(exclude))
    reporter = TqdmReporter(quiet, as_json)
    say = (lambda line: None) if quiet or as_json else (lambda line: click.echo(line, err=True))
    with w.together():  # a rank that cannot start stops them all
        p = plan(corpus, config_path, overrides, minutes=minutes, source=source, resume=resume, out_dir=out_dir,
                 overwrite=overwrite, allow_new_corpus=allow_new_corpus, reporter=reporter, workers=w, say=say)
    trainer = p.trainer
    if p.choice is not None:
        _describe_choice(p, minutes, source, as_json, quiet)
    if trainer.corpus.notice and w.root:  # the cache could not take the corpus: said even with -q
        click.echo(trainer.corpus.notice, err=True)
    if trainer.corpus.summary and not quiet:
        click.echo(dumps({"event": "corpus", "summary": trainer.corpus.summary, **trainer.corpus.fingerprint})
                   if as_json else trainer.corpus.summary)
    if dry_run:
        return _dry_run(trainer, as_json)
    if not quiet and w.root and len(trainer.val_ids) and len(trainer.corpus) <= MAX_NGRAM_CHARS:
        reporter.baseline = corpus_baseline(trainer.corpus, trainer.config.data.val_fraction)
    with _StopFlag() as stop:
        result = trainer.run(should_stop=stop, full_eval=full_eval)
    if not as_json:
        best = "-" if result.best_val is None else f"{result.best_val:.4f}"
        reason = STOP_REASONS.get(result.reason, result.reason)
        click.echo(f"stopped ({reason}) at step {result.step}, epoch {result.epoch}; best val {best} nats/char; "
                   f"checkpoints in {result.out_dir}")
        b = reporter.baseline
        if b is not None and result.best_val is not None and result.best_val > b.kneser_ney_bpc * LN2:
            click.echo(f"the best validation loss ({result.best_val:.4f} nats/char) is above the {b.order}-gram "
                       f"baseline's ({b.kneser_ney_bpc * LN2:.4f}): try --from bundled (English text), a longer "
                       "--minutes, or more text")
    if result.reason == "interrupted":  # by a signal to this rank or to another
        sys.exit(128 + (stop.signum or signal.SIGINT))


def _describe_choice(p, minutes, source, as_json: bool, quiet: bool) -> None:
    """What --minutes or --from chose, one line (a JSON object with --json)."""
    choice = p.choice
    if as_json:
        extra = {"from": p.source} if source else {"measured": [
            {"model": n, "seconds_per_step": s, "steps": k} for n, s, k in choice.measured]}
        click.echo(dumps({"event": "plan", "chose": choice.name, "steps": choice.steps, **extra}))
    elif quiet:
        return
    elif source:
        shown = "the bundled model" if source == BUNDLED_NAME else p.source
        budget = "" if minutes is None else f" for {minutes:g} minute{'' if minutes == 1 else 's'}"
        click.echo(f"fine-tuning {choice.name} from {shown}{budget}: " + "; ".join(choice.notes))
    else:
        click.echo(choice.reason(minutes))


def _dry_run(tr: Trainer, as_json: bool) -> None:
    report = describe_run(tr)  # every rank times the step together
    if not tr.workers.root:
        return
    if as_json:
        click.echo(dumps(report))
        return
    click.echo(f"# config {tr.config.name} (resolved)\n{tr.config.to_yaml().rstrip()}")
    fp = tr.corpus.fingerprint
    click.echo(f"corpus: {describe_fingerprint(fp)}: {tr.train_chars:,} training and {len(tr.val_ids):,} "
               f"validation characters")
    chars = report["vocabulary"]
    flagged = [c for c in chars if c["flags"]]
    click.echo(f"vocabulary: {len(chars)} characters, {len(flagged)} flagged")
    cells = [f"{show_char(c['char']):>6} {c['count']:>9,}" for c in sorted(chars, key=lambda c: -c["count"])]
    for i in range(0, len(cells), 5):
        click.echo("  " + "   ".join(cells[i : i + 5]))
    for c in flagged:
        click.echo(f"  flagged: {show_char(c['char'])} ({c['code_point']}), seen {c['count']:,}x: {'; '.join(c['flags'])}")
    click.echo(f"parameters: {report['parameters']:,} "
               f"({', '.join(f'{g} {n:,}' for g, n in report['parameters_by_group'].items())})")
    spe, total, sec = report["steps_per_epoch"], report["total_steps"], report["seconds_per_step"]
    click.echo(f"steps per epoch: {spe:,}" + (f"; budget {total:,} steps" if total else ""))
    parts = ", ".join(f"{k} {format_bytes(v)}" for k, v in tr.memory.parts.items())
    n, local, avail = report["workers"], tr.workers.local_size, report["memory_available_bytes"]
    avail_s = "unknown" if avail is None else format_bytes(avail)
    each = f" for the {local} workers here, each about {format_bytes(tr.memory.total)}" if local > 1 else ""
    click.echo(f"memory: about {format_bytes(tr.memory.total * local)}{each} ({'rank 0: ' if n > 1 else ''}{parts}); "
               f"available {avail_s}")
    eta = f"; the budget about {_minutes(sec * total)}" if total else ""
    by = f", {n} workers" if n > 1 else ""
    click.echo(f"time: {sec * 1000:,.1f} ms per step (timed{by}), about {_minutes(sec * spe)} per epoch{eta}")
    click.echo(f"dry run: nothing trained, no run written (a run would write to {tr.out_dir})")


def _minutes(seconds: float) -> str:
    return f"{seconds:,.1f} s" if seconds < 120 else f"{seconds / 60:,.1f} min"


