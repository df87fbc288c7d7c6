"""Sweep: short training runs over a grid of settings, validation loss against wall-clock
training time, so that charlm's time-budget rule and shipped configs come from data.

    python -m benchmarks.sweep --minutes 2 [--grid sizes|variants|all] [--out sweep.jsonl] [--threads 2]

Every run starts from configs/lstm-bundled.yaml (LSTM 2x256, dropout 0.2, B=50, T=50, Adam 3e-3,
cosine: the recipe the sweep was first run around) with the grid point's overrides, measures
its own step time (3 steps after a warm-up one), sizes its cosine schedule to end at the budget,
and trains for --minutes of training time, evaluating the whole validation split at each
quarter of the budget (evaluation not counted). One JSON line per evaluation and one per run
(with its final validation loss) go to --out; the table at the end ranks the runs.
"""

from __future__ import annotations

from .common import set_threads

THREADS = set_threads()

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

from charlm.config import load_config  # noqa: E402
from charlm.text.corpus import load_corpus
from charlm.training.trainer import Trainer

from .common import ROOT, corpus_path, machine_info  # noqa: E402

BASE = ROOT / "configs" / "lstm-bundled.yaml"
SIZES = {  # model width and depth; B=50, T=50, adam 3e-3, cosine, dropout 0.2
    "lstm-1x128": ["model.num_layers=1", "model.hidden_size=128", "model.dropout=0"],
    "lstm-1x256": ["model.num_layers=1", "model.hidden_size=256", "model.dropout=0"],
    "lstm-1x512": ["model.num_layers=1", "model.hidden_size=512", "model.dropout=0"],
    "lstm-2x256": [],
    "lstm-2x384": ["model.hidden_size=384"],
    "lstm-3x256": ["model.num_layers=3"],
    "lstm-2x512": ["model.hidden_size=512"],
}
VARIANTS = {  # batch, window, learning rate and dropout around lstm-2x256
    "2x256-B32-T64": ["data.batch_size=32", "data.seq_length=64"],
    "2x256-B64-T100": ["data.batch_size=64", "data.seq_length=100"],
    "2x256-B100-T50": ["data.batch_size=100"],
    "2x256-lr2e-3": ["train.lr=0.002"],
    "2x256-lr5e-3": ["train.lr=0.005"],
    "2x256-dropout0": ["model.dropout=0"],
}
SHORT_TIER = ["model.dropout=0", "train.lr=0.005"]  # the lr and dropout --minutes picks for short budgets
SMALL_BATCH = ["data.batch_size=32", "data.seq_length=64"]
ONE_LAYER = ["model.num_layers=1"]
SHORT = {  # the short tier's settings, and with a smaller batch of longer windows
    "1x256-lr5e-3": ONE_LAYER + ["model.hidden_size=256"] + SHORT_TIER,
    "1x128-lr5e-3": ONE_LAYER + ["model.hidden_size=128"] + SHORT_TIER,
    "1x256-lr5e-3-B32-T64": ONE_LAYER + ["model.hidden_size=256"] + SHORT_TIER + SMALL_BATCH,
    "2x256-lr5e-3-d0": SHORT_TIER,
    "2x256-lr5e-3-d0-B32-T64": SHORT_TIER + SMALL_BATCH,
}
GRIDS = {"sizes": SIZES, "variants": VARIANTS, "short": SHORT, "all": {**SIZES, **VARIANTS}}


def budgeted(overrides, minutes, corpus, steps_scale=1.0):
    """A Trainer whose cosine schedule ends after ``minutes`` of training on this machine."""
    probe = Trainer(load_config(BASE, overrides + ["train.max_steps=100000"]), corpus)
    sec = probe.seconds_per_step()
    steps = max(50, int(minutes * 60 / sec * steps_scale))
    cfg = load_config(BASE, overrides + [f"train.max_steps={steps}", "train.max_minutes=null", "train.sample_length=0"])
    return Trainer(cfg, corpus), sec


def run(name, overrides, minutes, corpus, log):
    tr, sec = budgeted(overrides, minutes, corpus)
    trained, checkpoints, points = 0.0, [minutes * 60 * q / 4 for q in (1, 2, 3, 4)], []
    while checkpoints and tr.state.step < tr.budget.total_steps:
        t = time.perf_counter()
        tr.train_step()
        trained += time.perf_counter() - t
        if trained >= checkpoints[0] or tr.state.step >= tr.budget.total_steps:
            checkpoints.pop(0)
            val = tr.evaluate()["val_loss"]
            points.append({"run": name, "minutes": round(trained / 60, 3), "step": tr.state.step, "val_loss": val})
            log(points[-1])
    params = sum(n for _, n in tr.model.param_counts())
    result = {"run": name, "overrides": overrides, "minutes": minutes, "params": params, "seconds_per_step": sec,
              "planned_steps": tr.budget.total_steps, "steps": tr.state.step, "final_val_loss": points[-1]["val_loss"]}
    log(result)
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--grid", choices=sorted(GRIDS), default="all")
    p.add_argument("--only", default=None, help="comma-separated run names of the grid")
    p.add_argument("--out", default=None, help="append JSON lines here")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    grid = GRIDS[args.grid]
    if args.only:
        grid = {k: v for k, v in grid.items() if k in args.only.split(",")}
    corpus = load_corpus(corpus_path())
    out = open(args.out, "a") if args.out else None

    def log(r):
        line = json.dumps(r)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    log({**machine_info(), "threads": THREADS, "minutes": args.minutes, "grid": args.grid})
    results = [run(name, ov, args.minutes, corpus, log) for name, ov in grid.items()]
    print(f"\n{'run':<18} {'params':>10} {'ms/step':>8} {'steps':>6} {'val nats/char':>14}")
    for r in sorted(results, key=lambda r: r["final_val_loss"]):
        print(f"{r['run']:<18} {r['params']:>10,} {r['seconds_per_step'] * 1000:>8.1f} {r['steps']:>6} "
              f"{r['final_val_loss']:>14.4f}")
    return results


if __name__ == "__main__":
    main()
