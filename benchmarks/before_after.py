"""The training step of this working tree beside another commit's, taking turns in one run.

    python -m benchmarks.before_after REV [--config configs/lstm-shakespeare.yaml] [--set k=v ...]
                                      [--rounds 6] [--steps 30]

For a change to the cells, the model or the step: REV is checked out into a temporary git
worktree, and each round runs one short process per tree (the order alternating), which builds
a ``Trainer`` through the public API (``from charlm import Trainer, load_config``, which the
package's folders did not change), warms up, and times --steps training steps on tiny
Shakespeare. A round's ratio is before / after seconds per step (above 1: this
tree is faster); the rounds' median and range are reported with each side's median.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .common import ROOT, corpus_path, machine_info

PROGRAM = r"""
import json, sys, tempfile, time
import numpy as np
from charlm import Trainer, load_config
config, corpus, steps, sets = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
with tempfile.TemporaryDirectory() as out:
    t = Trainer(load_config(config, sets), corpus, out + "/run")
    for _ in range(3):
        t.train_step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        t.train_step()
        times.append(time.perf_counter() - t0)
import charlm
print(json.dumps({"s_per_step": float(np.median(times)), "charlm": charlm.__file__}))
"""


def time_tree(tree: Path, args) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "PYTHONPATH")}
    env["PYTHONPATH"] = str(tree)
    cmd = [sys.executable, "-c", PROGRAM, str(ROOT / args.config), str(corpus_path()), str(args.steps), *args.set]
    r = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{tree}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if not Path(out["charlm"]).resolve().is_relative_to(tree.resolve()):  # an installed charlm came first
        raise SystemExit(f"{tree}: imported charlm from {out['charlm']}")
    return out["s_per_step"]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rev", help="the commit to compare with (before)")
    ap.add_argument("--config", default="configs/lstm-shakespeare.yaml")
    ap.add_argument("--set", action="append", default=[], help="config overrides for both sides")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=30, help="timed steps per process")
    args = ap.parse_args(argv)
    print(json.dumps(machine_info()), flush=True)
    with tempfile.TemporaryDirectory(prefix="charlm-before-") as tmp:
        before = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(before), args.rev], cwd=ROOT, check=True)
        try:
            times = {"before": [], "after": []}
            for i in range(args.rounds):
                order = [("before", before), ("after", ROOT)]
                for side, tree in order if i % 2 == 0 else order[::-1]:
                    times[side].append(time_tree(tree, args))
                print(json.dumps({"round": i, **{k: v[-1] for k, v in times.items()}}), flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=False)
    ratios = np.array(times["before"]) / np.array(times["after"])
    result = {"rev": args.rev, "config": args.config, "set": args.set, "rounds": args.rounds, "steps": args.steps,
              "before_ms": 1e3 * float(np.median(times["before"])), "after_ms": 1e3 * float(np.median(times["after"])),
              "ratio": {"median": float(np.median(ratios)), "min": float(ratios.min()), "max": float(ratios.max())}}
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
