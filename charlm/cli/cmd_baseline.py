"""``charlm baseline``: the n-gram numbers a model has to beat."""

from __future__ import annotations

import click

from ..config import MAX_NGRAM_ORDER, DataConfig, rule
from ..predict.baseline import MAX_BASELINE_VAL_CHARS, corpus_baseline
from ..predict.ngram import MAX_CHARS, ORDER
from ..text.corpus import load_corpus
from ..text.sources import CorpusSource
from ..use.score import LN2
from .base import Finite, dumps, main, option


@main.command(help=f"""Bits per character of an interpolated Kneser-Ney n-gram model and a unigram
    model, fitted on CORPUS's training split and scored on its validation split: the numbers an
    RNN has to beat. CORPUS: files and directories, read as train reads them. A training split of
    more than {MAX_CHARS / 1e6:g} million characters, or a validation split of more than
    {MAX_BASELINE_VAL_CHARS / 1e6:g} million, is sampled: the model is fitted on the last {MAX_CHARS / 1e6:g}
    million training characters and scored on {MAX_BASELINE_VAL_CHARS / 1e6:g} million of the
    validation split, and the output says so.""")
@click.argument("corpus", nargs=-1, required=True, type=click.Path(path_type=str))
@option("--include", multiple=True, metavar="GLOB", help="In a directory, read only files matching GLOB, as train.")
@option("--exclude", multiple=True, metavar="GLOB", help="In a directory, skip files matching GLOB, as train.")
@option("--order", default=ORDER, type=click.IntRange(1, MAX_NGRAM_ORDER),
        help="n of the n-gram model (characters of context + 1).")
@option("--val-fraction", default=DataConfig.val_fraction,
        type=Finite(0, rule(DataConfig, "val_fraction")["hi"], lo_open=True, hi_open=True),
        help="The last fraction of the corpus scored, as data.val_fraction in training.")
@option("--json", "as_json", is_flag=True, help="One JSON object.")
def baseline(corpus, include, exclude, order, val_fraction, as_json):
    loaded = load_corpus(CorpusSource(tuple(corpus), tuple(include), tuple(exclude)))
    if loaded.notice:
        click.echo(loaded.notice, err=True)
    b = corpus_baseline(loaded, val_fraction, order)
    if as_json:
        click.echo(dumps(b.to_dict()))
        return
    click.echo(f"{b.order}-gram Kneser-Ney: {b.kneser_ney_bpc:.4f} bits/char ({b.kneser_ney_bpc * LN2:.4f} nats)")
    click.echo(f"unigram:           {b.unigram_bpc:.4f} bits/char ({b.unigram_bpc * LN2:.4f} nats)")
    click.echo(b.describe_data())
