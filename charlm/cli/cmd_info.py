"""``charlm info``, ``export`` and ``keys``: what a checkpoint and a config hold, and the model
written for use elsewhere."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from ..config import SECTIONS
from ..export import FORMATS, describe_mixture, export
from ..predict.checkpoint import BUNDLED, describe, load_checkpoint
from ..text.corpus import describe_fingerprint
from ..training.finetune import describe_lineage
from .base import dumps, main, option


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


@main.command("export")
@click.argument("checkpoint", type=click.Path(path_type=str))
@option("--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=str), help="The file to write.")
@option("--format", "fmt", type=click.Choice(FORMATS), default=None, show_default="by the output's suffix",
        help="npz: the model alone, for charlm (no optimizer state, not resumable); onnx: the network as an ONNX "
             "graph (needs charlm[onnx]); html: one page that samples and scores in a browser, offline.")
def export_command(checkpoint, output, fmt):
    """Write a checkpoint's model for use elsewhere: .onnx for ONNX runtimes, .html for a web page,
    anything else a weights-only .npz for charlm (a third of a training checkpoint's size).

    ONNX: inputs ids int64 (T, B) and the state h0 (and c0 for an LSTM) float32 (layers, B,
    hidden); outputs log_probs (T, B, V) and hT (and cT); the vocabulary is the metadata
    property 'vocabulary'. The page: open it, or link to page.html#prime=ROMEO:&temperature=0.8
    (a sample) or page.html#score=TEXT (bits per character). ONNX and the page hold the network
    alone, without a mixture's n-gram.
    """
    ck = load_checkpoint(checkpoint, with_training_state=False)
    fmt = export(ck, output, fmt)
    click.echo(f"wrote {output} ({Path(output).stat().st_size / 1e6:.1f} MB, {fmt})")
    note = describe_mixture(ck) if fmt != "npz" else None
    if note:
        click.echo(note)


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
