"""Does locked (variational) dropout help where regularisers should matter most, on small
corpora? It is trained beside the plain recipe on the corpora of ``benchmarks/corpora.py``, with
the same steps, seed and everything else.

    python -m benchmarks.regularisers [--corpora corpora] [--only gpl3 licenses pydoc] [--seeds 1 2]
                                      [--max-steps 1000] [--json]

The recipe is what ``--minutes`` gives a small corpus (LSTM 2x256, dropout 0.5 between the
layers, batch 32 of 64 characters, Adam 3e-3 held then decayed to 1e-4 over the last fifth, a
5-gram mixed in) with a fixed length, 30 passes over the training split or --max-steps, so a
run's result does not depend on how fast the machine was. The variant changes one thing:
``model.variational_dropout 0.25`` instead of ``model.dropout``.

Zoneout (``model.zoneout_cell 0.5, zoneout_hidden 0.05``) and weight averaging (``train.ema
0.999``) were measured the same way (this script at commit d884dce) and removed: they won on no
corpus (docs/performance.md, "Tried and not kept").

A row: the corpus, the variant, the seed, the steps, and the best validation loss (nats/char)
of the network alone and of the mixture.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from benchmarks.common import machine_info
from benchmarks.corpora import CORPORA, build

RECIPE = {"model.type": "lstm", "model.num_layers": 2, "model.hidden_size": 256, "model.dropout": 0.5,
          "model.ngram_order": 5, "data.batch_size": 32, "data.seq_length": 64, "train.optimizer": "adam",
          "train.lr": 0.003, "train.lr_schedule": "linear", "train.cooldown": 0.2, "train.min_lr": 0.0001,
          "train.warmup_steps": 50, "train.epochs": None, "train.sample_length": 0}
VARIANTS = {
    "recipe": {},
    "locked dropout 0.25": {"model.dropout": 0.0, "model.variational_dropout": 0.25},
}


def steps_for(chars: int, max_steps: int) -> int:
    per_pass = chars * 0.9 / (RECIPE["data.batch_size"] * RECIPE["data.seq_length"])
    return max(50, min(max_steps, int(30 * per_pass)))


def one(corpus: Path, variant: str, seed: int, steps: int) -> dict:
    from charlm.config import load_config
    from charlm.training.trainer import Trainer

    sets = {**RECIPE, **VARIANTS[variant], "train.seed": seed, "train.max_steps": steps,
            "train.eval_every": max(1, steps // 10), "train.checkpoint_every": steps}
    cfg = load_config(None, [f"{k}={'null' if v is None else v}" for k, v in sets.items()], name="reg")
    out = Path(tempfile.mkdtemp(prefix="charlm-reg-"))
    try:
        tr = Trainer(cfg, corpus, out / "run")
        records = []

        class Keep:  # the evaluations, as the trainer reports them
            def __getattr__(self, name):
                return lambda *a: records.append(a[0]) if name == "evaluated" else None

        tr.reporter = Keep()
        result = tr.run()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    net = min(r.get("val_loss_net", r["val_loss"]) for r in records)
    return {"corpus": corpus.stem, "variant": variant, "seed": seed, "steps": result.step,
            "best_val_mixed": result.best_val, "best_val_network": net}


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpora", type=Path, default=Path("corpora"))
    ap.add_argument("--only", nargs="*", default=["gpl3", "licenses", "pydoc"], choices=list(CORPORA))
    ap.add_argument("--seeds", nargs="*", type=int, default=[1, 2])
    ap.add_argument("--max-steps", type=int, default=1000)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    print(json.dumps(machine_info()) if args.json else f"machine: {machine_info()}", flush=True)
    paths = build(args.corpora)
    rows = []
    for name in args.only:
        corpus = paths[name]
        steps = steps_for(len(corpus.read_text(encoding="utf-8")), args.max_steps)
        for seed in args.seeds:
            for variant in args.variants:
                row = one(corpus, variant, seed, steps)
                rows.append(row)
                print(json.dumps(row) if args.json else
                      f"{row['corpus']:>9} seed {seed} {variant:<24} {row['steps']:>5} steps: network "
                      f"{row['best_val_network']:.4f}, mixture {row['best_val_mixed']:.4f} nats/char", flush=True)
    return rows


if __name__ == "__main__":
    main()
