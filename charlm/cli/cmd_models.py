"""``charlm info``, ``export``, ``baseline``, ``plot``, ``report``, ``keys``, and the bundled model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from ..baseline import corpus_baseline
from ..checkpoint import BUNDLED, describe, export_weights, load_checkpoint
from ..config import SECTIONS
from ..data import describe_fingerprint, load_corpus
from ..errors import CharlmError
from ..finetune import describe_lineage
from ..score import LN2
from . import Finite, dumps, main, option


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
    from ..report import write_report

    click.echo(f"wrote {write_report(run_dir, output, corpus, chars)}")


@main.command("plot")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=str), metavar="RUN_DIR...")
@option("--output", "-o", default="loss.png", type=click.Path(dir_okay=False, path_type=str),
        help="The image to write (.png, .svg or .pdf).")
def plot_cmd(run_dirs, output):
    """Loss curves of one or more runs: training and validation loss by step and by minute
    (nats, with bits per character on a second axis), and the learning rate."""
    from ..plot import plot

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
    if d["lineage"]:
        click.echo(describe_lineage(d["lineage"]))
    if d["ngram"]:
        g = d["ngram"]
        weight = "not fitted yet" if g["weight"] is None else f"weight {g['weight']:.3f} on the network"
        click.echo(f"mixture: a {g['order']}-gram of its {g['chars']:,} training characters, {weight}")
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


