"""The ``charlm`` command: a thin shell over the library.

Every ``CharlmError`` (and an OS error such as a full disk) becomes one line on stderr and
exit status 1, in exactly one place: ``CharlmGroup.invoke``. A reader that closes the pipe
early (``charlm sample | head``) ends charlm quietly with status 0.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import click
from tqdm import tqdm

from . import __version__
from .audit import audit, show_char
from .autoconfig import choose
from .baseline import MAX_BASELINE_CHARS, corpus_baseline
from .checkpoint import describe, export_weights, load_checkpoint
from .config import SECTIONS, load_config
from .data import describe_fingerprint, load_corpus, read_text
from .errors import CharlmError, echo
from .files import atomic_write_text
from .memory import available_memory, format_bytes
from .novelty import longest_copied
from .sample import MAX_BATCH, MAX_LENGTH, beam_search, encode_prime, generate, keep_best
from .score import LN2, score_texts
from .score import explain as explain_text
from .train import Reporter, Trainer, run_checkpoint

MAX_MESSAGE = 400  # characters of an error line


def option(*args, **kwargs):
    """click.option that shows its default in --help."""
    kwargs.setdefault("show_default", True)
    return click.option(*args, **kwargs)


def dumps(obj) -> str:
    """Strict JSON (no NaN or Infinity), one line."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=False)


class Finite(click.ParamType):
    """A float in [lo, hi] (lo excluded when lo_open); NaN and infinities are refused, which
    click.FloatRange lets NaN through."""

    name = "float"

    def __init__(self, lo: float, hi: float, lo_open: bool = False):
        self.lo, self.hi, self.lo_open = lo, hi, lo_open

    def convert(self, value, param, ctx):
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"{echo(value)} is not a number", param, ctx)
        ok = math.isfinite(v) and (v > self.lo if self.lo_open else v >= self.lo) and v <= self.hi
        if not ok:
            self.fail(f"{echo(value)} is not in the range {self.lo}{'<' if self.lo_open else '<='}x<={self.hi}", param, ctx)
        return v


class CharlmGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            _quiet_broken_pipe()
        except CharlmError as e:
            _fail(str(e))
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            _fail(f"{where}{e.strerror or e}")


# The library names its parameters; only the CLI knows their flags. Each library phrase that
# names one, and how a user of the command line writes it.
FLAGS = {"resume=": "--resume ", "another out_dir": "another --out", "overwrite=True": "--overwrite",
         "allow_new_corpus=True": "--allow-new-corpus", "unknown='skip'": "--unknown skip"}


def _fail(message: str):
    for phrase, flag in FLAGS.items():
        message = message.replace(phrase, flag)
    line = " ".join(message.split())  # one line, whatever the message held
    if len(line) > MAX_MESSAGE:
        line = line[: MAX_MESSAGE - 3] + "..."
    raise click.ClickException(line) from None


def _quiet_broken_pipe():
    """The reader is gone: point stdout at /dev/null so the interpreter's final flush cannot
    fail again, and exit 0 as Unix tools do."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(0)


@click.group(cls=CharlmGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="charlm")
def main():
    """Train character-level RNN, LSTM and GRU language models in NumPy; sample and score text."""


# ---- train ---------------------------------------------------------------------------
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

    def sampled(self, s):
        if self.as_json:
            click.echo(dumps({"event": "sample", **s}))
            return
        self._say(f"sample at step {s['step']}: {s['text'][:200].replace(chr(10), ' / ')}")

    def stopped(self, result):
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

    def __init__(self):
        self.signum = None

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:  # a second signal: stop now (checkpoints are written atomically)
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)

    def __call__(self):
        return self.signum is not None


STOP_REASONS = {"early_stopping": "early stopping: no validation improvement of at least train.min_delta "
                                  "in train.patience evaluations; best.npz holds the best model"}


@main.command()
@click.argument("corpus", type=click.Path(path_type=str))
@option("--config", "config_path", type=click.Path(path_type=str), default=None,
        show_default="built-in defaults", help="YAML config with sections model, data, train (every key optional).")
@option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
        help="Override one config key, e.g. --set train.lr=0.001 (repeatable).")
@option("--out", "out_dir", type=click.Path(path_type=str), default=None,
        show_default="runs/<config name>, or the resumed run's directory",
        help="Run directory for last.npz, best.npz and metrics.jsonl.")
@option("--resume", default=None, metavar="CHECKPOINT|RUN_DIR|auto",
        help="Continue a run: its last.npz, its directory, or 'auto' (the run in the output directory, "
             "if there is one; otherwise start it).")
@option("--overwrite", is_flag=True, help="Replace the run already in the output directory.")
@option("--allow-new-corpus", is_flag=True,
        help="With --resume: continue on a different corpus (fine-tuning); logged in metrics.jsonl.")
@option("--minutes", type=Finite(0, 10080, lo_open=True), default=None, metavar="N",
        help="Train for N minutes with the model and schedule charlm chooses for that budget on this machine "
             "(it times the candidates first); --config and --set still override any choice.")
@option("--dry-run", is_flag=True,
        help="Show the resolved config, a corpus and vocabulary audit, parameters, memory and time per epoch; "
             "train nothing, write nothing.")
@option("--json", "as_json", is_flag=True,
        help="JSON Lines on stdout: one object per evaluation and one when training stops (no progress bar).")
@option("--quiet", "-q", is_flag=True, help="No config dump, progress bar or eval lines.")
def train(corpus, config_path, overrides, out_dir, resume, overwrite, allow_new_corpus, minutes, dry_run, as_json,
          quiet):
    """Train a model on CORPUS (a UTF-8 file, or a directory of .txt files read in sorted order).

    A directory that holds a run is never overwritten unless --overwrite is given.
    Every config key and its default: charlm keys.
    """
    if resume and overwrite:
        raise click.UsageError("--resume continues a run and --overwrite replaces it: give one")
    if allow_new_corpus and not resume:
        raise click.UsageError("--allow-new-corpus applies to --resume")
    if minutes is not None and resume:
        raise click.UsageError("--minutes chooses a new run's model; a resumed run keeps its own (extend it with "
                               "--set train.max_minutes=...)")
    reporter = TqdmReporter(quiet, as_json)
    if resume == "auto":  # the same command line starts the run, and continues it after a crash
        last = Path(out_dir or Path("runs") / load_config(config_path, list(overrides)).name) / "last.npz"
        resume = str(last) if last.is_file() else None
    if minutes is not None:
        trainer = _budgeted_trainer(corpus, minutes, config_path, overrides, out_dir, reporter, overwrite, quiet,
                                    as_json)
    elif resume:
        ck = load_checkpoint(run_checkpoint(resume))
        cfg = load_config(config_path, list(overrides), base=ck.config)
        trainer = Trainer.resume(ck, corpus, cfg, out_dir, reporter, allow_new_corpus=allow_new_corpus)
    else:
        cfg = load_config(config_path, list(overrides))
        trainer = Trainer(cfg, corpus, out_dir, reporter, overwrite=overwrite)
    if dry_run:
        return _dry_run(trainer, as_json)
    if not quiet and len(trainer.val_ids) and len(trainer.corpus) <= MAX_BASELINE_CHARS:
        reporter.baseline = corpus_baseline(trainer.corpus, trainer.config.data.val_fraction)
    with _StopFlag() as stop:
        result = trainer.run(should_stop=stop)
    if not as_json:
        best = "-" if result.best_val is None else f"{result.best_val:.4f}"
        reason = STOP_REASONS.get(result.reason, result.reason)
        click.echo(f"stopped ({reason}) at step {result.step}, epoch {result.epoch}; best val {best} nats/char; "
                   f"checkpoints in {result.out_dir}")
    if stop.signum is not None:
        sys.exit(128 + stop.signum)


def _budgeted_trainer(corpus_path, minutes, config_path, overrides, out_dir, reporter, overwrite, quiet, as_json):
    corpus = load_corpus(corpus_path)
    if not quiet and not as_json:
        click.echo(f"timing the candidate models for a {minutes:g}-minute budget...", err=True)
    choice = choose(corpus, minutes)
    if as_json:
        click.echo(dumps({"event": "plan", "chose": choice.name, "steps": choice.steps, "measured": [
            {"model": n, "seconds_per_step": s, "steps": k} for n, s, k in choice.measured]}))
    elif not quiet:
        click.echo(choice.reason(minutes))
    cfg = load_config(config_path, list(overrides), under=choice.config, name=f"{minutes:g}min")
    return Trainer(cfg, corpus, out_dir, reporter, overwrite=overwrite)


def _dry_run(tr: Trainer, as_json: bool) -> None:
    chars = audit(tr.corpus)
    counts = tr.model.param_counts()
    spe = tr.batches.num_windows
    sec = tr.seconds_per_step()
    avail = available_memory()
    report = {
        "config": tr.config.to_dict(), "corpus": tr.corpus.fingerprint,
        "train_chars": tr.train_chars, "val_chars": len(tr.val_ids),
        "vocabulary": [c.to_dict() for c in chars],
        "parameters": sum(n for _, n in counts), "parameters_by_group": dict(counts),
        "steps_per_epoch": spe, "total_steps": tr.budget.total_steps,
        "memory_bytes": tr.memory.total, "memory_parts": tr.memory.parts, "memory_available_bytes": avail,
        "seconds_per_step": sec, "seconds_per_epoch": sec * spe, "output_dir": str(tr.out_dir),
    }
    if as_json:
        click.echo(dumps(report))
        return
    click.echo(f"# config {tr.config.name} (resolved)\n{tr.config.to_yaml().rstrip()}")
    fp = tr.corpus.fingerprint
    click.echo(f"corpus: {describe_fingerprint(fp)}: {tr.train_chars:,} training and {len(tr.val_ids):,} "
               f"validation characters")
    flagged = [c for c in chars if c.flags]
    click.echo(f"vocabulary: {len(chars)} characters, {len(flagged)} flagged")
    cells = [f"{show_char(c.char):>6} {c.count:>9,}" for c in sorted(chars, key=lambda c: -c.count)]
    for i in range(0, len(cells), 5):
        click.echo("  " + "   ".join(cells[i : i + 5]))
    for c in flagged:
        click.echo(f"  flagged: {show_char(c.char)} (U+{ord(c.char):04X}), seen {c.count:,}x: {'; '.join(c.flags)}")
    click.echo(f"parameters: {report['parameters']:,} ({', '.join(f'{g} {n:,}' for g, n in counts)})")
    total = tr.budget.total_steps
    click.echo(f"steps per epoch: {spe:,}" + (f"; budget {total:,} steps" if total else ""))
    parts = ", ".join(f"{k} {format_bytes(v)}" for k, v in tr.memory.parts.items())
    avail_s = "unknown" if avail is None else format_bytes(avail)
    click.echo(f"memory: about {format_bytes(tr.memory.total)} ({parts}); available {avail_s}")
    eta = f"; the budget about {_minutes(sec * total)}" if total else ""
    click.echo(f"time: {sec * 1000:,.1f} ms per step (timed), about {_minutes(sec * spe)} per epoch{eta}")
    click.echo(f"dry run: nothing trained, nothing written (a run would write to {tr.out_dir})")


def _minutes(seconds: float) -> str:
    return f"{seconds:,.1f} s" if seconds < 120 else f"{seconds / 60:,.1f} min"


@main.command()
@click.argument("corpus", type=click.Path(path_type=str))
@option("--order", default=5, type=click.IntRange(1, 10), help="n of the n-gram model (characters of context + 1).")
@option("--val-fraction", default=0.1, type=Finite(0, 0.99, lo_open=True),
        help="The last fraction of the corpus scored, as data.val_fraction in training.")
@option("--json", "as_json", is_flag=True, help="One JSON object.")
def baseline(corpus, order, val_fraction, as_json):
    """Bits per character of an interpolated Kneser-Ney n-gram model and a unigram model,
    fitted on CORPUS's training split and scored on its validation split: the numbers an RNN
    has to beat."""
    b = corpus_baseline(load_corpus(corpus), val_fraction, order)
    if as_json:
        click.echo(dumps(b.to_dict()))
        return
    click.echo(f"{b.order}-gram Kneser-Ney: {b.kneser_ney_bpc:.4f} bits/char ({b.kneser_ney_bpc * LN2:.4f} nats)")
    click.echo(f"unigram:           {b.unigram_bpc:.4f} bits/char ({b.unigram_bpc * LN2:.4f} nats)")
    click.echo(f"fitted on {b.train_chars:,} training characters, scored on {b.val_chars:,} validation characters")


@main.command()
@click.argument("run_dir", type=click.Path(path_type=str))
@option("--output", "-o", default="report.html", type=click.Path(dir_okay=False, path_type=str),
        help="The HTML page to write.")
@option("--corpus", default=None, type=click.Path(path_type=str), show_default="the one the run was trained on",
        help="Where the run's corpus is, if it has moved (its validation split is the held-out text).")
@option("--chars", default=1000, type=click.IntRange(100, 20000), help="Characters of held-out text to explain.")
def report(run_dir, output, corpus, chars):
    """One self-contained HTML page about a run (opens offline): loss curves and samples, an
    explained score of held-out text, a hidden-unit explorer with the units that track
    features of the text, and how far back the gradient reaches."""
    from .report import write_report

    click.echo(f"wrote {write_report(run_dir, output, corpus, chars)}")


@main.command("plot")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=str), metavar="RUN_DIR...")
@option("--output", "-o", default="loss.png", type=click.Path(dir_okay=False, path_type=str),
        help="The image to write (.png, .svg or .pdf).")
def plot_cmd(run_dirs, output):
    """Loss curves of one or more runs: training and validation loss by step and by minute
    (nats, with bits per character on a second axis), and the learning rate."""
    from .plot import plot

    click.echo(f"wrote {plot(run_dirs, output)}")


@main.command()
@option("--json", "as_json", is_flag=True, help="One JSON object per key.")
def keys(as_json):
    """List every config key with its default and what it does."""
    for sname, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            m = f.metadata
            if as_json:
                click.echo(dumps({"key": f"{sname}.{f.name}", "default": f.default, "choices": m["choices"],
                                  "help": m["help"]}))
                continue
            allowed = f" [{', '.join(m['choices'])}]" if m["choices"] else ""
            click.echo(f"{sname}.{f.name} = {f.default!r}{allowed}: {m['help']}")


# ---- the bundled model, info, export ---------------------------------------------------
BUNDLED = Path(__file__).parent / "models" / "tiny-shakespeare.npz"
CHECKPOINT_HELP = ("A .npz checkpoint, or a run directory (then its best.npz); without it, the tiny-Shakespeare "
                   "model that ships with charlm.")


def open_model(checkpoint):
    """The checkpoint asked for, or the bundled model (saying so on stderr)."""
    if checkpoint is None:
        if not BUNDLED.is_file():
            raise CharlmError(f"{BUNDLED}: the bundled model is missing from this installation; give --checkpoint")
        ck = load_checkpoint(BUNDLED, with_training_state=False)
        best = ck.meta.get("best_val")
        click.echo(f"model: the bundled tiny-Shakespeare {ck.config.model.type.upper()} "
                   f"{ck.config.model.num_layers}x{ck.config.model.hidden_size}"
                   + (f" (validation {best:.3f} nats/char)" if isinstance(best, float) else "")
                   + "; --checkpoint chooses another", err=True)
        return ck
    return load_checkpoint(checkpoint, with_training_state=False)


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=str), required=False)
@option("--json", "as_json", is_flag=True, help="One JSON object.")
def info(checkpoint, as_json):
    """What a checkpoint holds: model, parameters per tensor, vocabulary, training, config.

    CHECKPOINT: a .npz file or a run directory; without it, the bundled model.
    """
    ck = load_checkpoint(checkpoint or BUNDLED)
    d = describe(ck)
    if as_json:
        click.echo(dumps(d))
        return
    click.echo(f"checkpoint: {d['path']} (format {d['format']} version {d['format_version']}"
               f"{', resumable' if d['resumable'] else ', weights only'})")
    click.echo(f"model: {d['type']}, {d['layers']} layer(s) of {d['hidden_size']} units, {d['parameters']:,} parameters")
    for name, t in d["tensors"].items():
        click.echo(f"  {name:<8} {' x '.join(map(str, t['shape'])):>12}  {t['count']:>10,}")
    click.echo(f"vocabulary: {d['vocabulary_size']} characters: {d['vocabulary']!r}")
    best, last = (f"{d[k]:.4f}" if isinstance(d[k], float) else "-" for k in ("best_val", "last_val"))
    minutes = f"{d['elapsed_s'] / 60:.1f} min" if isinstance(d["elapsed_s"], (int, float)) else "-"
    click.echo(f"training: step {d['step']}, epoch {d['epoch']}, {minutes}; validation best {best}, last {last} nats/char")
    if d["corpus"]:
        click.echo(f"corpus: {describe_fingerprint(d['corpus'])}")
    click.echo(f"# config {d['config_name']} (resolved)\n{ck.config.to_yaml().rstrip()}")


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=str))
@option("--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=str), help="The file to write.")
def export(checkpoint, output):
    """Write a checkpoint's model alone (no optimizer state): for sampling, scoring, sharing.

    The file is a third of a training checkpoint's size and cannot be resumed.
    """
    export_weights(load_checkpoint(checkpoint), output)
    click.echo(f"wrote {output} ({Path(output).stat().st_size / 1e6:.1f} MB)")


# ---- sample --------------------------------------------------------------------------
@main.command()
@option("--checkpoint", "-c", default=None, type=click.Path(path_type=str), show_default="the bundled model",
        help=CHECKPOINT_HELP)
@option("--length", "-n", default=1000, type=click.IntRange(0, MAX_LENGTH), help="Characters to generate after the prime.")
@option("--temperature", "-t", default=1.0, type=Finite(0, 100, lo_open=True),
        help="Divide the logits by this (0 < T <= 100); lower is more conservative.")
@option("--top-k", default=None, type=click.IntRange(min=1), show_default="all",
        help="Sample only among the K most likely characters.")
@option("--top-p", default=None, type=Finite(0, 1, lo_open=True), show_default="off",
        help="Nucleus sampling (0 < P <= 1): only among the most likely characters whose probability adds up to P.")
@option("--prime", "-p", default="\n", show_default="a newline", help="Text fed through the model first, and printed.")
@option("--seed", "-s", default=None, type=int, show_default="random", help="Random seed; the same seed gives the same text.")
@option("--greedy", is_flag=True, help="Always take the most likely character (deterministic).")
@option("--num-samples", "-N", default=1, type=click.IntRange(1, MAX_BATCH), help="Samples to generate, as one batch.")
@option("--best-of", default=1, type=click.IntRange(1, 100),
        help="Generate this many candidates per sample and keep the most likely (lowest bits per character).")
@option("--beam", default=None, type=click.IntRange(1, 100), metavar="WIDTH",
        help="Beam search of this width for the most likely continuation (deterministic; no sampling options).")
@option("--stop", default=None, help="End a sample at this string (left out), e.g. $'\\n\\n' for a blank line.")
@option("--json", "as_json", is_flag=True,
        help="One JSON object per sample: prime, text, chars, log_prob_nats, log_prob_bits, bits_per_char, stopped.")
@option("--output", "-o", type=click.Path(dir_okay=False, path_type=str), default=None,
        help="Write the samples to this file (whole, atomically) instead of stdout.")
@option("--interactive", "-i", is_flag=True,
        help="Read primes from stdin, one per line, and stream each continuation; an empty line or end of input quits.")
@option("--check-novel", type=click.Path(path_type=str), default=None, metavar="CORPUS",
        help="Report each sample's longest substring that also occurs in CORPUS (does the model compose or copy?).")
@click.pass_context
def sample(ctx, checkpoint, length, temperature, top_k, top_p, prime, seed, greedy, num_samples, best_of, beam, stop,
           as_json, output, interactive, check_novel):
    """Generate text from a trained model; a single sample streams to stdout as it is generated."""
    given = {p for p in ("temperature", "top_k", "top_p", "greedy", "num_samples", "best_of", "prime")
             if ctx.get_parameter_source(p) not in (click.core.ParameterSource.DEFAULT, None)}
    sampling = sorted(given - {"prime"})
    if beam and sampling:
        raise click.UsageError(f"--beam searches, it does not sample: leave out "
                               f"{', '.join('--' + p.replace('_', '-') for p in sampling)}")
    if interactive and (output or "prime" in given):
        raise click.UsageError("--interactive reads its primes from stdin and writes to stdout: leave out --prime and -o")
    if stop == "":
        raise click.UsageError("--stop needs at least one character")
    ck = open_model(checkpoint)
    if not interactive:
        encode_prime(ck.vocab, prime)  # refused before anything is printed
    job = _SampleJob(ck, length, temperature, top_k, top_p, seed, greedy, num_samples, best_of, beam, stop, check_novel)
    if interactive:
        _interactive(job, as_json)
    elif output is None and not as_json and job.streams:
        _stream(job, prime)
    else:
        _write_samples(job, job.make(prime), as_json, output)


class _SampleJob:
    """The options of one ``charlm sample``: makes samples for a prime, and describes them."""

    def __init__(self, ck, length, temperature, top_k, top_p, seed, greedy, num_samples, best_of, beam, stop,
                 check_novel):
        self.ck, self.model = ck, ck.build_model()
        self.length, self.temperature, self.top_k, self.top_p = length, temperature, top_k, top_p
        self.seed, self.greedy, self.n, self.best_of, self.beam, self.stop = seed, greedy, num_samples, best_of, beam, stop
        self.novel_path = check_novel
        self.corpus_text = read_text(check_novel) if check_novel else None
        self.streams = not beam and num_samples * best_of == 1  # one sample, sampled: it can stream

    def make(self, prime, on_text=None):
        if self.beam:
            return [beam_search(self.model, self.ck.vocab, prime, self.length, self.beam, stop=self.stop)]
        samples = generate(self.model, self.ck.vocab, prime, self.length, self.n * self.best_of, self.temperature,
                           self.top_k, self.top_p, self.greedy, self.seed, self.stop,
                           on_text=on_text if self.streams else None)
        return keep_best(samples, self.best_of) if self.best_of > 1 else samples

    def record(self, i, s) -> dict:
        d = {"sample": i, **s.to_dict(), "checkpoint": self.ck.meta["path"]}
        if self.corpus_text is not None:
            d["novelty"] = longest_copied(s.text, self.corpus_text).to_dict()
        return d

    def report_novelty(self, s) -> None:
        if self.corpus_text is None:
            return
        c = longest_copied(s.text, self.corpus_text)
        click.echo(f"novelty: the longest run also in {self.novel_path} is {c.length} of {s.chars} characters"
                   + (f": {echo(c.text)} (corpus offset {c.offset:,})" if c.length else ""), err=True)


def _stream(job: _SampleJob, prime: str) -> None:
    """The prime, then the continuation as it is generated, then its novelty (stderr)."""
    out = sys.stdout
    out.write(prime)
    out.flush()
    samples = job.make(prime, on_text=lambda piece: (out.write(piece), out.flush()))
    out.write("\n")
    out.flush()
    for s in samples:
        job.report_novelty(s)


def _write_samples(job: _SampleJob, samples, as_json: bool, output) -> None:
    if as_json:
        text = "".join(dumps(job.record(i, s)) + "\n" for i, s in enumerate(samples, 1))
    else:
        parts = []
        for i, s in enumerate(samples, 1):
            bpc = "-" if s.bits_per_char is None else f"{s.bits_per_char:.3f}"
            head = f"=== sample {i} of {len(samples)}: {bpc} bits/char ===\n" if len(samples) > 1 else ""
            parts.append(f"{head}{s.prime}{s.text}\n")
        text = "\n".join(parts)
    if output:
        atomic_write_text(output, text)
        click.echo(f"wrote {len(samples)} sample(s) to {output}", err=True)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    if not as_json:
        for s in samples:
            job.report_novelty(s)


def _interactive(job: _SampleJob, as_json: bool) -> None:
    """Each line of stdin is a prime; an empty line or the end of input quits."""
    while True:
        if sys.stdin.isatty():
            click.echo("> ", nl=False, err=True)
        prime = sys.stdin.readline().rstrip("\r\n")
        if not prime:
            return
        if as_json or not job.streams:
            _write_samples(job, job.make(prime), as_json, None)
        else:
            _stream(job, prime)


# ---- score ---------------------------------------------------------------------------
@main.command()
@click.argument("text", required=False)
@option("--checkpoint", "-c", "checkpoints", multiple=True, type=click.Path(path_type=str),
        show_default="the bundled model", help=CHECKPOINT_HELP + " Repeat to compare models, one column each.")
@option("--file", "file_", type=click.File("r", encoding="utf-8"), default=None,
        help="Score the whole file as one text.")
@option("--lines", type=click.File("r", encoding="utf-8"), default=None,
        help="Score each non-empty line of this file on its own ('-' for stdin).")
@option("--sort", is_flag=True, help="Most plausible first: ascending bits per character (of the first model).")
@option("--context", default="\n", show_default="a newline", help="Text the model reads before each scored text.")
@option("--unknown", type=click.Choice(["error", "skip"]), default="error",
        help="Characters outside the vocabulary: fail, or leave them out and count them as skipped.")
@option("--explain", is_flag=True,
        help="Each character coloured by its surprisal (bits), and the model's top 3 guesses where it was most "
             "surprised; a table when stdout is not a terminal or NO_COLOR is set.")
@option("--per-char", is_flag=True, help="One row per character: bits, rank of the true character, top 3 guesses "
                                         "(with --json: one object per character).")
@option("--json", "as_json", is_flag=True, help="One JSON object per text and model.")
def score(text, checkpoints, file_, lines, sort, context, unknown, explain, per_char, as_json):
    """How probable TEXT is under a model: log-probability, bits per character, perplexity.

    Each character is scored given the context and every character before it.
    """
    given = [x is not None for x in (text, file_, lines)]
    if sum(given) != 1:
        raise click.UsageError("give exactly one of TEXT, --file or --lines")
    try:
        if file_ is not None:
            texts = [file_.read()]
        elif lines is not None:
            texts = [ln.rstrip("\r\n") for ln in lines]
            texts = [t for t in texts if t]
        else:
            texts = [text]
    except UnicodeDecodeError as e:
        raise CharlmError(f"{(file_ or lines).name}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not texts:
        raise CharlmError("no text to score (the input has no non-empty lines)")
    if explain or per_char:
        if len(checkpoints) > 1:
            raise click.UsageError("--explain and --per-char show one model: give one --checkpoint")
        ck = open_model(checkpoints[0] if checkpoints else None)
        model = ck.build_model()
        for i, t in enumerate(texts):
            _explained(explain_text(model, ck.vocab, t, context=context), i, explain and not per_char, as_json)
        return
    columns = []  # per model: (name, [Score])
    for path in checkpoints or [None]:
        ck = open_model(path)
        columns.append((ck.meta["path"], score_texts(ck.build_model(), ck.vocab, texts, context=context, unknown=unknown)))
    order = list(range(len(texts)))
    if sort:
        first = columns[0][1]
        order.sort(key=lambda i: math.inf if first[i].bits_per_char is None else first[i].bits_per_char)
    if as_json:
        for i in order:
            for name, scores in columns:
                click.echo(dumps({**scores[i].to_dict(), "checkpoint": name}))
        return
    if len(columns) == 1 and not sort:
        for i in order:
            s = columns[0][1][i]
            skipped = f", {s.skipped} skipped" if s.skipped else ""
            click.echo(f"log p = {s.log_prob_nats:.4f} nats ({s.log_prob_bits:.4f} bits), "
                       f"{_num(s.bits_per_char)} bits/char, perplexity {_num(s.perplexity)}, "
                       f"{s.chars} chars{skipped}: {_shown(s.text)}")
        return
    names = [_model_name(name) for name, _ in columns]
    widths = [max(9, len(n)) for n in names]
    click.echo("  ".join(f"{n:>{w}}" for n, w in zip(names, widths)) + "  text (bits/char)")
    for i in order:
        cells = [f"{_num(scores[i].bits_per_char):>{w}}" for (_, scores), w in zip(columns, widths)]
        click.echo("  ".join(cells) + f"  {_shown(texts[i])}")


SURPRISE = [(1.0, "green"), (3.0, None), (6.0, "yellow"), (math.inf, "red")]  # bits -> colour


def _explained(chars, text_index: int, coloured: bool, as_json: bool) -> None:
    """A text character by character: coloured by surprisal on a terminal, else a table."""
    if as_json:
        for c in chars:
            click.echo(dumps({"text": text_index + 1, **c.to_dict()}))
        return
    color = coloured and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    if color:
        line = "".join(click.style(c.char, fg=next(col for lim, col in SURPRISE if c.bits <= lim)) for c in chars)
        click.echo(line)
        click.echo("(" + ", ".join(click.style(f"<= {lim:g} bits" if lim < math.inf else "more", fg=col)
                                   for lim, col in SURPRISE) + ")")
    else:
        click.echo(f"{'char':>6}  {'bits':>6}  {'rank':>4}  top 3 guesses")
        for c in chars:
            top = ", ".join(f"{show_char(ch)} {p:.2f}" for ch, p in c.top)
            click.echo(f"{show_char(c.char):>6}  {c.bits:6.2f}  {c.rank:>4}  {top}")
    total = sum(c.bits for c in chars)
    click.echo(f"{total:.2f} bits, {total / len(chars):.3f} bits/char over {len(chars)} characters")
    if coloured:
        click.echo("most surprising:")
        for c in sorted(chars, key=lambda c: -c.bits)[:5]:
            top = ", ".join(f"{show_char(ch)} {p:.2f}" for ch, p in c.top)
            click.echo(f"  {show_char(c.char)} at {c.index}: {c.bits:.2f} bits (rank {c.rank}); expected {top}")


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _shown(text: str) -> str:
    return repr(text) if len(text) <= 60 else repr(text[:57] + "...")


def _model_name(path: str) -> str:
    """runs/lstm/best.npz -> lstm/best"""
    p = Path(path)
    return f"{p.parent.name}/{p.stem}" if p.parent.name else p.stem


if __name__ == "__main__":
    main()
