"""``charlm report`` and ``charlm plot``: a run for people to look at (their libraries load
only when the command runs: matplotlib is optional)."""

from __future__ import annotations

import click

from ..see.report import REPORT_CHARS
from .base import adapt_options, adapting, main, option


@main.command()
@click.argument("run_dir", type=click.Path(path_type=str))
@option("--output", "-o", default="report.html", type=click.Path(dir_okay=False, path_type=str),
        help="The HTML page to write.")
@option("--corpus", default=None, type=click.Path(path_type=str), show_default="the one the run was trained on",
        help="Where the run's corpus is, if it has moved (its validation split is the held-out text).")
@option("--chars", default=REPORT_CHARS, type=click.IntRange(100, 20000), help="Characters of held-out text to explain.")
@adapt_options
def report(run_dir, output, corpus, chars, **adapt):
    """One self-contained HTML page about a run (opens offline): loss curves and samples, an
    explained score of held-out text, a hidden-unit explorer with the units that track
    features of the text, and how far back the gradient reaches."""
    from ..see.report import write_report

    click.echo(f"wrote {write_report(run_dir, output, corpus, chars, adapt=adapting(**adapt))}")


@main.command("plot")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=str), metavar="RUN_DIR...")
@option("--output", "-o", default="loss.png", type=click.Path(dir_okay=False, path_type=str),
        help="The image to write (.png, .svg or .pdf).")
def plot_cmd(run_dirs, output):
    """Loss curves of one or more runs: training and validation loss by step and by minute
    (nats, with bits per character on a second axis), and the learning rate."""
    from ..see.plot import plot

    click.echo(f"wrote {plot(run_dirs, output)}")
