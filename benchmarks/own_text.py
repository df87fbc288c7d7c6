"""charlm on people's own text: what ``charlm train CORPUS --minutes N`` and ``--minutes N
--from bundled`` leave the user with on the corpora of ``benchmarks/corpora.py``, against the
5-gram baseline on the same validation split. Every run goes through the installed ``charlm``
script, as a user runs it; the validation split is also scored with ``charlm score --file``.

    python -m benchmarks.own_text [--corpora corpora] [--out runs/own-text] [--budgets 1 2 10]
                                  [--only gpl3 ...] [--inits | --finetune-sweep]

--inits compares ways to start the new characters' weights when fine-tuning (step-0 and
best validation loss after a 1-minute fine-tuning budget); --finetune-sweep compares learning
rates and lengths of the fine-tuning recipe. Results: <out>/results.jsonl and a
markdown table on stdout (docs/own-text.md holds the measured one).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.common import ROOT, machine_info
from benchmarks.corpora import CORPORA, build

ENGLISH = ("gpl3", "licenses", "pydoc")  # fine-tuned from the (English) bundled model at every budget
CHARLM = shutil.which("charlm", path=str(Path(sys.executable).parent)) or "charlm"


def run(*args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    return subprocess.run([CHARLM, *map(str, args)], capture_output=True, text=True, env=env, check=True)


def val_split(corpus: Path, out: Path) -> Path:
    text = corpus.read_text(encoding="utf-8")
    n_val = int(round(len(text) * 0.1))  # data.split's rule, on characters
    p = out / f"{corpus.stem}.val.txt"
    p.write_text(text[len(text) - n_val :], encoding="utf-8")
    return p


def one(corpus: Path, minutes: float, source: str | None, out: Path) -> dict:
    run_dir = out / f"{corpus.stem}-{minutes:g}min-{'from-' + source if source else 'scratch'}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    args = ["train", corpus, "--minutes", minutes, "--out", run_dir, "--json"] + (["--from", source] if source else [])
    events = [json.loads(line) for line in run(*args).stdout.splitlines() if line.startswith("{")]
    plan, stopped = events[0], events[-1]
    evals = [e for e in events if e.get("event") == "eval"]
    best = min(evals, key=lambda e: e["val_loss"])
    scored = json.loads(run("score", "--file", val_split(corpus, out), "-c", run_dir / "best.npz", "--json").stdout)
    return {"corpus": corpus.stem, "minutes": minutes, "from": source, "model": plan.get("chose"),
            "steps": stopped["step"], "reason": stopped["reason"], "best_val_nats": best["val_loss"],
            "best_val_bpc": best["val_bpc"], "net_alone_bpc": best.get("val_loss_net", best["val_loss"]) / 0.6931471805599453,
            "mix_weight": best.get("mix_weight"), "score_file_bpc": scored["bits_per_char"],
            "seconds": best["elapsed_s"]}


def baseline(corpus: Path) -> dict:
    return json.loads(run("baseline", corpus, "--json").stdout)


def inits(corpus: Path, minutes: float) -> list[dict]:
    """The new characters' start (finetune.start's, zero, random) compared by fine-tuning."""
    import numpy as np

    from charlm.config import Config
    from charlm.text.corpus import load_corpus
    from charlm.training import finetune
    from charlm.training.recipes import finetune_recipe
    from charlm.training.trainer import Trainer
    from charlm.use.score import evaluate

    ck = finetune.open_source("bundled")
    raw = load_corpus(corpus)
    cfg = Config.from_dict(finetune_recipe(ck.config, raw, minutes).config, name="inits")
    cfg.train.sample_length = 0
    grown = finetune.encode_for(ck, raw)
    V0 = len(ck.vocab)
    rows = []
    for how in ("frequency", "zero", "random"):
        start = finetune.start(ck, grown, cfg)
        p = start.params
        if how == "zero":  # input column 0, head row 0, bias 0
            p["l0/Wx"][:, V0:] = 0
            p["head/b"][V0:] = 0
        elif how == "random":  # as a new model's: Glorot-uniform columns and rows, bias 0
            rng = np.random.default_rng(0)
            for name, sl in (("l0/Wx", np.s_[:, V0:]), ("head/W", np.s_[V0:])):
                a = p[name][sl]
                lim = np.sqrt(6.0 / sum(p[name].shape))
                p[name][sl] = rng.uniform(-lim, lim, a.shape)
            p["head/b"][V0:] = 0
        out = Path("/tmp") / f"charlm-inits-{corpus.stem}-{how}"
        shutil.rmtree(out, ignore_errors=True)
        tr = Trainer(cfg, grown, out, start=start)
        d = cfg.data
        step0 = evaluate(tr.model, tr.val_ids, d.batch_size, d.seq_length)
        res = tr.run()
        rows.append({"corpus": corpus.stem, "init": how, "new_chars": len(grown.vocab) - V0,
                     "step0_val_nats_net": step0, "best_val_nats": res.best_val, "steps": res.step})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def finetune_sweep(corpus: Path, out: Path) -> list[dict]:
    """Learning rate and length of the fine-tuning recipe: ``--from bundled`` with train.lr
    and the number of passes (train.max_steps) changed, no time budget."""
    from charlm.text.corpus import load_corpus
    from charlm.training.recipes import FINETUNE

    chars = len(load_corpus(corpus)) * 0.9
    per_pass = chars / (FINETUNE["data"]["batch_size"] * FINETUNE["data"]["seq_length"])
    rows = []
    grid = [(5e-4, 10), (1e-3, 10), (2e-3, 10), (3e-3, 10), (1e-3, 5), (1e-3, 20), (2e-3, 20)]
    if chars > 100_000:  # a pass takes ten times as long: the points that bracket the recipe
        grid = [(1e-3, 10), (3e-3, 10), (1e-3, 20)]
    for lr, passes in grid:
        steps = max(1, int(passes * per_pass))
        run_dir = out / f"{corpus.stem}-sweep-lr{lr:g}-p{passes}"
        shutil.rmtree(run_dir, ignore_errors=True)
        sets = [f"train.lr={lr}", f"train.max_steps={steps}", f"train.eval_every={max(1, steps // 20)}",
                f"train.checkpoint_every={max(1, steps // 20)}", "train.sample_length=0"]
        lines = run("train", corpus, "--from", "bundled", "--out", run_dir, "--json",
                    *[x for o in sets for x in ("--set", o)]).stdout.splitlines()
        evals = [json.loads(x) for x in lines if x.startswith('{"event": "eval"')]
        best = min(evals, key=lambda e: e["val_loss"])
        rows.append({"corpus": corpus.stem, "sweep": "finetune", "lr": lr, "passes": passes, "steps": evals[-1]["step"],
                     "best_val_bpc": best["val_bpc"], "best_net_bpc": best["val_loss_net"] / 0.6931471805599453,
                     "best_at_pass": round(best["step"] / per_pass, 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def table(results: Path) -> str:
    """The markdown table of docs/own-text.md from a results.jsonl: bits per character on the
    validation split, the run's own (cross-fitted mixture) and `charlm score --file`'s."""
    rows = [json.loads(x) for x in results.read_text().splitlines()]
    runs = [r for r in rows if "minutes" in r]
    size = {r["corpus"]: r["baseline"]["train_chars"] + r["baseline"]["val_chars"] for r in rows if "baseline" in r}
    out = ["| corpus | characters | 5-gram | budget | from scratch: run / score --file (model, network alone) "
           "| from the bundled model: run / score --file (network alone) |", "|---|---:|---:|---:|---|---|"]
    for corpus in dict.fromkeys(r["corpus"] for r in runs):
        for minutes in dict.fromkeys(r["minutes"] for r in runs if r["corpus"] == corpus):
            cells = []
            for source in (None, "bundled"):
                hit = [r for r in runs if r["corpus"] == corpus and r["minutes"] == minutes and r["from"] == source]
                if not hit:
                    cells.append("-")
                    continue
                r = hit[-1]
                model = f"{r['model']}, " if source is None else ""
                cells.append(f"{r['best_val_bpc']:.3f} / {r['score_file_bpc']:.3f} ({model}{r['net_alone_bpc']:.3f})")
            kn = next(r["kn_bpc"] for r in runs if r["corpus"] == corpus)
            out.append(f"| {corpus} | {size[corpus]:,} | {kn:.3f} | {minutes:g} min | {cells[0]} | {cells[1]} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpora", type=Path, default=ROOT / "corpora")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "own-text")
    ap.add_argument("--budgets", type=float, nargs="+", default=[1, 2, 10])
    ap.add_argument("--only", nargs="+", default=None)
    ap.add_argument("--inits", action="store_true")
    ap.add_argument("--finetune-sweep", action="store_true")
    ap.add_argument("--table", type=Path, default=None, help="print the markdown table of a results.jsonl and stop")
    args = ap.parse_args()
    if args.table:
        print(table(args.table))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    names = args.only or list(CORPORA)
    paths = {n: args.corpora / f"{n}.txt" for n in names}
    if not all(p.is_file() for p in paths.values()):
        build(args.corpora)
    results = args.out / "results.jsonl"
    print(json.dumps({"machine": machine_info()}), flush=True)
    if args.inits or args.finetune_sweep:
        for n in names:
            for r in inits(paths[n], 1) if args.inits else finetune_sweep(paths[n], args.out):
                with open(results, "a") as f:
                    f.write(json.dumps(r) + "\n")
        return
    done = [json.loads(x) for x in results.read_text().splitlines()] if results.exists() else []  # a restart goes on
    for n in names:
        b = next((r["baseline"] for r in done if r.get("corpus") == n and "baseline" in r), None)
        if b is None:
            b = baseline(paths[n])
            _record(results, {"corpus": n, "baseline": b})
        for source in (None, "bundled"):
            budgets = args.budgets if source is None or n in ENGLISH else args.budgets[:1]  # other scripts: one look
            for minutes in budgets:
                if any(r.get("corpus") == n and r.get("minutes") == minutes and r.get("from") == source for r in done):
                    continue
                r = {**one(paths[n], minutes, source, args.out), "kn_bpc": b["kneser_ney_bits_per_char"]}
                done.append(r)
                _record(results, r)


def _record(results: Path, r: dict) -> None:
    print(json.dumps(r), flush=True)
    with open(results, "a") as f:
        f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
