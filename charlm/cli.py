"""The ``charlm`` command: a thin shell over the library.

Every ``CharlmError`` (and an OS error such as a full disk) becomes one line on stderr and
exit status 1, in exactly one place: ``CharlmGroup.invoke``.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import time

import click
from tqdm import tqdm

from . import __version__
from .checkpoint import load_checkpoint
from .config import SECTIONS, load_config
from .errors import CharlmError
from .sample import sample as sample_text
from .score import score_texts
from .train import Reporter, Trainer


def option(*args, **kwargs):
    """click.option that shows its default in --help."""
    kwargs.setdefault("show_default", True)
    return click.option(*args, **kwargs)


class CharlmGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CharlmError as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            raise click.ClickException(f"{where}{e.strerror or e}") from None


@click.group(cls=CharlmGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="charlm")
def main():
    """Train character-level RNN, LSTM and GRU language models in NumPy; sample and score text."""


# ---- train ---------------------------------------------------------------------------
class TqdmReporter(Reporter):
    """Prints the resolved config and parameter counts, then a progress bar and one line per eval."""

    def __init__(self, quiet: bool = False):
        self.quiet, self.bar, self._ema, self._shown = quiet, None, None, 0.0

    def start(self, tr):
        if not self.quiet:
            click.echo(f"# config {tr.config.name} (resolved)\n{tr.config.to_yaml().rstrip()}")
            counts = tr.model.param_counts()
            total = sum(n for _, n in counts)
            click.echo(f"parameters: {total:,} ({', '.join(f'{g} {n:,}' for g, n in counts)})")
            click.echo(f"corpus: {tr.train_chars:,} training and {len(tr.val_ids):,} validation characters, "
                       f"vocabulary {len(tr.vocab)}, {tr.batches.num_windows:,} windows per epoch")
            click.echo(f"output: {tr.out_dir}" + (f" (resuming at step {tr.step})" if tr.step else ""))
        self.cpw = tr.batches.chars_per_window
        self.bar = tqdm(total=tr.total_steps, initial=tr.step, unit="step", dynamic_ncols=True,
                        disable=self.quiet, desc="train", file=sys.stderr)
        self.val = tr.last_val

    def step(self, tr, loss):
        self._ema = loss if self._ema is None else 0.95 * self._ema + 0.05 * loss
        self.bar.update(1)
        now = time.monotonic()
        if now - self._shown < 0.5:  # formatting the postfix every step costs more than a tiny model's step
            return
        self._shown = now
        rate = self.bar.format_dict.get("rate") or 0.0
        post = {"epoch": f"{tr.epoch + tr.batch / tr.batches.num_windows:.2f}", "loss": f"{self._ema:.3f}",
                "val": "-" if self.val is None else f"{self.val:.3f}", "chars/s": f"{rate * self.cpw:,.0f}"}
        self.bar.set_postfix(post, refresh=False)

    def evaluated(self, r):
        self.val = r["val_loss"]
        train = "-" if r["train_loss"] is None else f"{r['train_loss']:.4f}"
        self.message(f"step {r['step']} epoch {r['epoch']:.2f}: train {train}, val {r['val_loss']:.4f} nats "
                     f"({r['val_bpc']:.4f} bits) per char, lr {r['lr']:.3g}, {r['chars_per_s']:,.0f} chars/s")

    def message(self, text):
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


@main.command()
@click.argument("corpus", type=click.Path(path_type=str))
@option("--config", "config_path", type=click.Path(path_type=str), default=None,
              show_default="built-in defaults", help="YAML config with sections model, data, train (every key optional).")
@option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
        help="Override one config key, e.g. --set train.lr=0.001 (repeatable).")
@option("--out", "out_dir", type=click.Path(path_type=str), default=None,
              show_default="runs/<config name>, or the checkpoint's directory with --resume",
        help="Run directory for last.npz, best.npz and metrics.jsonl.")
@option("--resume", type=click.Path(path_type=str), default=None,
        help="Continue the run saved in this last.npz: same step, optimizer, schedule, data position and RNG.")
@option("--quiet", "-q", is_flag=True, help="No config dump, progress bar or eval lines.")
def train(corpus, config_path, overrides, out_dir, resume, quiet):
    """Train a model on CORPUS (a UTF-8 file, or a directory of .txt files read in sorted order).

    Every config key and its default: charlm keys.
    """
    ck = load_checkpoint(resume) if resume else None
    cfg = load_config(config_path, list(overrides), base=ck.config if ck else None)
    trainer = Trainer(cfg, corpus, out_dir, resume=ck, reporter=TqdmReporter(quiet))
    with _StopFlag() as stop:
        result = trainer.run(should_stop=stop)
    best = "-" if result.best_val is None else f"{result.best_val:.4f}"
    click.echo(f"stopped ({result.reason}) at step {result.step}, epoch {result.epoch}; best val {best} nats/char; "
               f"checkpoints in {result.out_dir}")
    if stop.signum is not None:
        sys.exit(128 + stop.signum)


@main.command()
def keys():
    """List every config key with its default and what it does."""
    for sname, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            m = f.metadata
            allowed = f" [{', '.join(m['choices'])}]" if m["choices"] else ""
            click.echo(f"{sname}.{f.name} = {f.default!r}{allowed}: {m['help']}")


# ---- sample --------------------------------------------------------------------------
@main.command()
@option("--checkpoint", "-c", required=True, type=click.Path(path_type=str),
        help="A .npz checkpoint, or a run directory (then its best.npz).")
@option("--length", "-n", default=1000, type=int, help="Characters to generate after the prime.")
@option("--temperature", "-t", default=1.0, type=float, help="Divide the logits by this (> 0); lower is more conservative.")
@option("--top-k", default=None, type=int, show_default="all", help="Sample only among the K most likely characters.")
@option("--prime", "-p", default="\n", show_default="a newline", help="Text fed through the model first, and printed.")
@option("--seed", "-s", default=None, type=int, show_default="random", help="Random seed; the same seed gives the same text.")
@option("--greedy", is_flag=True, help="Always take the most likely character (deterministic).")
def sample(checkpoint, length, temperature, top_k, prime, seed, greedy):
    """Generate text from a trained model, streamed to stdout as it is generated."""
    ck = load_checkpoint(checkpoint, with_training_state=False)
    chars = sample_text(ck.build_model(), ck.vocab, length=length, prime=prime, temperature=temperature,
                        top_k=top_k, greedy=greedy, seed=seed)
    first = next(chars, "")  # validates the arguments before the prime is printed
    out = sys.stdout
    out.write(prime + first)
    for i, c in enumerate(chars):
        out.write(c)
        if c == "\n" or i % 64 == 0:
            out.flush()
    out.write("\n")
    out.flush()


# ---- score ---------------------------------------------------------------------------
@main.command()
@click.argument("text", required=False)
@option("--checkpoint", "-c", required=True, type=click.Path(path_type=str),
        help="A .npz checkpoint, or a run directory (then its best.npz).")
@option("--file", "file_", type=click.File("r", encoding="utf-8"), default=None,
        help="Score the whole file as one text.")
@option("--lines", type=click.File("r", encoding="utf-8"), default=None,
        help="Score each non-empty line of this file on its own ('-' for stdin).")
@option("--context", default="\n", show_default="a newline", help="Text the model reads before each scored text.")
@option("--unknown", type=click.Choice(["error", "skip"]), default="error",
        help="Characters outside the vocabulary: fail, or leave them out and count them as skipped.")
@option("--json", "as_json", is_flag=True, help="One JSON object per text.")
def score(text, checkpoint, file_, lines, context, unknown, as_json):
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
    ck = load_checkpoint(checkpoint, with_training_state=False)
    for s in score_texts(ck.build_model(), ck.vocab, texts, context=context, unknown=unknown):
        if as_json:
            click.echo(json.dumps(s.to_dict(), ensure_ascii=False))
        else:
            skipped = f", {s.skipped} skipped" if s.skipped else ""
            shown = s.text if len(s.text) <= 60 else s.text[:57] + "..."
            click.echo(f"log p = {s.log_prob_nats:.4f} nats ({s.log_prob_bits:.4f} bits), "
                       f"{s.bits_per_char:.4f} bits/char, perplexity {s.perplexity:.4f}, "
                       f"{s.chars} chars{skipped}: {shown!r}")


if __name__ == "__main__":
    main()
