"""``charlm score``: probabilities of texts, rankings, several models, explained characters."""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from pathlib import Path

import click

from ..errors import CharlmError
from ..predict.adapt import Adaptive
from ..text.audit import show_char
from ..use.score import explain as explain_text
from ..use.score import score_texts
from .base import (
    CHECKPOINT_HELP,
    adapt_options,
    adapting,
    dumps,
    main,
    network_only_option,
    open_model,
    option,
    predictor,
)


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
@adapt_options
@network_only_option
@option("--json", "as_json", is_flag=True, help="One JSON object per text and model (per character with --explain or --per-char).")
def score(text, checkpoints, file_, lines, sort, context, unknown, explain, per_char, network_only, as_json, **adapt):
    """How probable TEXT is under a model: log-probability, bits per character, perplexity.

    Each character is scored given the context and every character before it. With --adapt,
    the texts of --lines are read in order and what the model learns from one carries to the
    next.
    """
    adapt = adapting(**adapt)
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
        model = predictor(ck, network_only) if adapt is None else Adaptive(predictor(ck, network_only), adapt)
        static = None if adapt is None else score_texts(predictor(ck, network_only), ck.vocab, texts, context=context,
                                                         unknown=unknown)
        for i, t in enumerate(texts):
            chars = explain_text(model, ck.vocab, t, context=context, unknown=unknown,
                                 where=f"text {i + 1}" if len(texts) > 1 else "text")
            _explained(chars, i, explain and not per_char, as_json, None if static is None else static[i].bits_per_char,
                       skipped=len(t) - len(chars))
        _say_resets([model])
        return
    columns = []  # per model: (name, [Score], [static Score] with --adapt, else None, resets)
    adaptives = []
    for path in checkpoints or [None]:
        ck = open_model(path)
        scored = score_texts(predictor(ck, network_only), ck.vocab, texts, context=context, unknown=unknown)
        adapted = None
        if adapt is not None:
            adaptives.append(Adaptive(predictor(ck, network_only), adapt))
            adapted = score_texts(adaptives[-1], ck.vocab, texts, context=context, unknown=unknown)
        columns.append((ck.meta["path"], adapted or scored, scored if adapted else None,
                        adaptives[-1].resets if adapted else 0))
    _say_resets(adaptives)
    order = list(range(len(texts)))
    if sort:
        first = columns[0][1]
        order.sort(key=lambda i: math.inf if first[i].bits_per_char is None else first[i].bits_per_char)
    if as_json:
        for i in order:
            for name, scores, static, resets in columns:
                extra = {} if static is None else {"static_bits_per_char": static[i].bits_per_char,
                                                   "static_log_prob_nats": static[i].log_prob_nats,
                                                   "adapt": dataclasses.asdict(adapt), "adapt_resets": resets}
                click.echo(dumps({**scores[i].to_dict(), **extra, "checkpoint": name}))
        return
    if len(columns) == 1 and not sort:
        _, scores, static, _ = columns[0]
        for i in order:
            s = scores[i]
            skipped = f", {s.skipped} skipped" if s.skipped else ""
            rate = f"{_num(s.bits_per_char)} bits/char" + ("" if static is None else
                                                          f" adapted ({_num(static[i].bits_per_char)} static)")
            click.echo(f"log p = {s.log_prob_nats:.4f} nats ({s.log_prob_bits:.4f} bits), {rate}, "
                       f"perplexity {_num(s.perplexity)}, {s.chars} chars{skipped}: {_shown(s.text)}")
        return
    names = [_model_name(name) for name, _, _, _ in columns]
    cell = (lambda sc, st, i: _num(sc[i].bits_per_char)) if adapt is None else \
        (lambda sc, st, i: f"{_num(sc[i].bits_per_char)}/{_num(st[i].bits_per_char)}")
    widths = [max(9 if adapt is None else 13, len(n)) for n in names]
    click.echo("  ".join(f"{n:>{w}}" for n, w in zip(names, widths))
               + ("  text (bits/char)" if adapt is None else "  text (bits/char adapted/static)"))
    for i in order:
        cells = [f"{cell(scores, static, i):>{w}}" for (_, scores, static, _), w in zip(columns, widths)]
        click.echo("  ".join(cells) + f"  {_shown(texts[i])}")


def _say_resets(adaptives) -> None:
    """One line on stderr when adaptation diverged (adapt.py: it returned to the trained weights)."""
    resets = sum(getattr(a, "resets", 0) for a in adaptives)
    if resets:
        a = adaptives[0]
        click.echo(f"--adapt diverged {resets:,} time{'s' * (resets != 1)} at --adapt-lr {a.options.lr:g} and "
                   "returned to the trained weights each time; the scores are valid, a smaller --adapt-lr adapts "
                   "without it", err=True)


SURPRISE = [(1.0, "green"), (3.0, None), (6.0, "yellow"), (math.inf, "red")]  # bits -> colour


def _explained(chars, text_index: int, coloured: bool, as_json: bool, static: float | None = None,
               skipped: int = 0) -> None:
    """A text character by character: coloured by surprisal on a terminal, else a table.
    ``static``: with --adapt, the text's bits per character without adapting; ``skipped``: the
    characters --unknown skip left out."""
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
    click.echo(f"{total:.2f} bits, {total / len(chars):.3f} bits/char over {len(chars)} characters"
               + (f", {skipped} skipped" if skipped else "") + ("" if static is None else f", adapted ({static:.3f} static)"))
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

