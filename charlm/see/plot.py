"""Loss curves of one or more runs, from their metrics.jsonl: against steps and against
minutes of training, nats on the left axis and bits per character on the right, and the
learning rate. matplotlib is an optional dependency (pip install 'charlm[plot]')."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import CharlmError
from ..training.rundir import METRICS, evaluations


@dataclass
class RunCurves:
    name: str
    records: list[dict]  # the evaluation records of metrics.jsonl, in order


def read_run(run_dir) -> RunCurves:
    """A run directory's evaluations (or those of a metrics.jsonl file named directly)."""
    p = Path(run_dir)
    path = p / METRICS if p.is_dir() else p
    if not path.is_file():
        raise CharlmError(f"{p}: no {METRICS} (is it a run directory?)")
    records = evaluations(path)
    if not records:
        raise CharlmError(f"{path}: no evaluations yet; nothing to plot")
    return RunCurves(path.parent.name, records)


def figure(runs: list[RunCurves]):
    """A matplotlib Figure with three panels: loss by step, loss by minute, lr by step."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise CharlmError("charlm plot needs matplotlib: pip install 'charlm[plot]'") from None
    fig = Figure(figsize=(13, 4.2), layout="constrained")
    by_step, by_minute, lr = fig.subplots(1, 3)
    for i, run in enumerate(runs):
        color = f"C{i}"
        steps = [r["step"] for r in run.records]
        val = [r["val_loss"] for r in run.records]
        train = [(r["step"], r["train_loss"]) for r in run.records if r.get("train_loss") is not None]
        by_step.plot(steps, val, color=color, label=f"{run.name} validation")
        if train:
            by_step.plot(*zip(*train), color=color, linestyle="--", alpha=0.7, label=f"{run.name} training")
        by_minute.plot([r.get("elapsed_s", 0) / 60 for r in run.records], val, color=color, label=f"{run.name} validation")
        train_min = [(r.get("elapsed_s", 0) / 60, r["train_loss"]) for r in run.records if r.get("train_loss") is not None]
        if train_min:
            by_minute.plot(*zip(*train_min), color=color, linestyle="--", alpha=0.7, label=f"{run.name} training")
        lrs = [(r["step"], r["lr"]) for r in run.records if r.get("lr") is not None]
        if lrs:
            lr.plot(*zip(*lrs), color=color, label=run.name)
    for ax, xlabel, title in ((by_step, "step", "loss by step"), (by_minute, "minutes of training", "loss by time")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("nats per character")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        bits = ax.secondary_yaxis("right", functions=(lambda n: n / math.log(2), lambda b: b * math.log(2)))
        bits.set_ylabel("bits per character")
    lr.set_xlabel("step")
    lr.set_ylabel("learning rate")
    lr.set_title("learning rate")
    lr.grid(alpha=0.3)
    lr.legend(fontsize=8)
    return fig


def plot(run_dirs, out) -> Path:
    """Write the figure of ``run_dirs`` to ``out`` (PNG, SVG or PDF by its extension)."""
    from ..files import atomic_write

    runs = [read_run(d) for d in run_dirs]
    fig = figure(runs)
    out = Path(out)
    fmt = out.suffix.lstrip(".").lower() or "png"
    if fmt not in ("png", "svg", "pdf"):
        raise CharlmError(f"{out}: charlm plot writes .png, .svg or .pdf")
    atomic_write(out, lambda f: fig.savefig(f, format=fmt, dpi=110))
    return out
