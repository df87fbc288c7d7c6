"""Data-parallel throughput: charlm with 1 worker (one process, 2 BLAS threads) and with 2 workers
(two MPI ranks, one thread each), beside PyTorch with 2 threads, per row of the throughput grid;
and the measurements behind the scaling model in docs/scaling.md.

    python -m benchmarks.workers [--rows lstm-1x128,...] [--rounds 3] [--seconds 3] [--json]
    python -m benchmarks.workers --scaling [--json]

Every charlm side runs the real training step, ``Trainer.train_step`` (forward, BPTT, with
workers the gradient allreduce, clipping, Adam), and the ranks' per-step agreement on the
clock; PyTorch runs TorchTwin's step (benchmarks/common.py) on the same windows. The sides
alternate in rounds: charlm with 1 worker and PyTorch interleaved in this process
(throughput.interleaved), then the 2-rank job (``mpiexec -n 2``, charlm[mpi]) for as long, so
machine noise reaches all three; each figure is the median step of all its rounds (the 2-rank
job's, rank 0's step, which waits for the slower rank in the allreduce). A row whose batch does
not divide by 2 has no 2-worker figure.

``--scaling`` measures what the model needs: one rank's step time (one thread) at each batch
share B/N a job of N ranks would give it, and the allreduce of N=2 ranks on this machine for
messages of 4 KB to 16 MB.
"""

from __future__ import annotations

from .common import set_threads

THREADS = set_threads()

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from charlm.config import Config  # noqa: E402
from charlm.text.corpus import load_corpus
from charlm.training.launch import mpi_launcher
from charlm.training.parallel import current
from charlm.training.trainer import Trainer

from .common import corpus_path, have_torch, machine_info  # noqa: E402
from .throughput import GRID, TorchStep, interleaved, load_batches  # noqa: E402

SHARES = (50, 25, 13, 7, 4)  # B/N of a 50-stream batch for N = 1, 2, 4, 8, 16
RANKS = (1, 2, 4, 8, 16)
# Networks between machines: assumed (latency s, bandwidth bytes/s), not measured here (one machine).
NETWORKS = {"10 GbE": (50e-6, 1.1e9), "1 GbE": (50e-6, 0.11e9)}
SCALING_ROWS = ("lstm-1x128", "lstm-2x128", "lstm-2x256", "lstm-2x512")
MESSAGE_FLOATS = (1_000, 10_000, 100_000, 300_000, 1_000_000, 4_000_000)


class TrainerStep:
    """charlm's training step as ``charlm train`` takes it, with this process's workers."""

    def __init__(self, row, corpus, workers=None, batch=None):
        _, kind, L, H, B, T, dropout = row
        cfg = Config.from_dict({"model": {"type": kind, "num_layers": L, "hidden_size": H, "dropout": dropout},
                                "data": {"batch_size": batch or B, "seq_length": T},
                                "train": {"max_steps": 10**9, "sample_length": 0}}, name="bench")
        self.tr = Trainer(cfg, corpus, out_dir="/nonexistent-bench-run", workers=workers)

    def step(self):
        self.tr.train_step()
        self.tr.workers.agree(self.tr.state.elapsed_s, False)


def rank_job(row_name: str, seconds: float) -> None:
    """Under mpiexec: time the row's step on every rank for ``seconds``; rank 0 prints the median."""
    w = current()
    row = next(r for r in GRID if r[0] == row_name)
    step = TrainerStep(row, load_corpus(corpus_path()), workers=w)
    for _ in range(3):
        step.step()
    times, start, stop = [], time.perf_counter(), False
    while not stop:
        t = time.perf_counter()
        step.step()
        times.append(time.perf_counter() - t)
        _, stop = w.agree(0.0, time.perf_counter() - start >= seconds)  # every rank takes as many steps
    if w.root:
        print(json.dumps({"seconds_per_step": float(np.median(times)), "steps": len(times)}), flush=True)


def allreduce_job() -> None:
    """Under mpiexec: the median allreduce time of float32 messages, and of the per-step agreement."""
    w = current()
    out = {}
    for n in MESSAGE_FLOATS:
        a = np.ones(n, np.float32)
        for _ in range(5):
            w.mean_(a)
        ts = []
        for _ in range(max(20, min(300, 30_000_000 // n))):
            w.comm.Barrier()
            t = time.perf_counter()
            w.mean_(a)
            ts.append(time.perf_counter() - t)
        out[n * 4] = float(np.median(ts))
    ts = []
    for _ in range(500):
        t = time.perf_counter()
        w.agree(1.0, False)
        ts.append(time.perf_counter() - t)
    if w.root:
        print(json.dumps({"allreduce_s_by_bytes": out, "agree_s": float(np.median(ts)), "ranks": w.size}), flush=True)


def run_job(args: list[str], ranks: int = 2) -> dict:
    r = subprocess.run([mpi_launcher(), "-n", str(ranks), sys.executable, "-m", "benchmarks.workers", "--threads", "1", *args],
                       capture_output=True, text=True, timeout=600)
    if r.returncode:
        sys.exit(f"the {ranks}-rank job failed: {r.stderr.strip()[-400:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def row_figures(row, corpus, rounds: int, seconds: float, torch: bool) -> dict:
    name, _, _, _, B, T, dropout = row
    sides = {"charlm_1": TrainerStep(row, corpus)}
    if torch:
        batches, V = load_batches(B, T)
        sides["torch"] = TorchStep(row[1], row[2], row[3], V, batches, dropout)
    per = {k: [] for k in (*sides, "charlm_2")}
    for _ in range(rounds):
        med = interleaved(sides, min_steps=10, min_seconds=2 * seconds)
        for k, v in med.items():
            per[k].append(v)
        if B % 2 == 0:
            per["charlm_2"].append(run_job(["--rank-job", name, "--seconds", str(seconds)])["seconds_per_step"])
    rec = {"row": name, "batch": B, "seq": T}
    for k, v in per.items():
        if v:
            rec[f"{k}_chars_per_s"] = B * T / float(np.median(v))
    if "charlm_2_chars_per_s" in rec:
        rec["speedup_2_over_1"] = rec["charlm_2_chars_per_s"] / rec["charlm_1_chars_per_s"]
    if torch:
        rec["ratio_1"] = rec["charlm_1_chars_per_s"] / rec["torch_chars_per_s"]
        if "charlm_2_chars_per_s" in rec:
            rec["ratio_2"] = rec["charlm_2_chars_per_s"] / rec["torch_chars_per_s"]
    return rec


def scaling(corpus, as_json: bool) -> dict:
    """One rank's step (this process, one thread) at each batch share, and 2 ranks' allreduce."""
    steps = {}
    for name in SCALING_ROWS:
        row = next(r for r in GRID if r[0] == name)
        for b in SHARES:
            step = TrainerStep(row, corpus, batch=b)
            med = interleaved({"s": step}, min_steps=10, min_seconds=2.0)["s"]
            steps.setdefault(name, {})[b] = med
            params = step.tr.model.flat.size
        steps[name]["params"] = params
        if not as_json:
            print(f"{name:12s} {params:>9,} parameters; one rank's step by batch share: "
                  + ", ".join(f"b={b} {1000 * steps[name][b]:.2f} ms" for b in SHARES), flush=True)
    comm = run_job(["--allreduce-job"])
    if not as_json:
        print("allreduce of 2 ranks: " + ", ".join(f"{int(k) // 1024} KB {1e6 * v:.0f} us"
                                                    for k, v in comm["allreduce_s_by_bytes"].items())
              + f"; the per-step agreement {1e6 * comm['agree_s']:.1f} us", flush=True)
    return {"steps": steps, **comm}


def allreduce_fit(by_bytes: dict) -> tuple[float, float]:
    """(latency, bandwidth) of a(S) = latency + S / bandwidth through the 2-rank measurements at
    ~400 KB and ~4 MB, which bracket the models' gradients."""
    points = sorted((int(k), v) for k, v in by_bytes.items())  # JSON made the sizes strings
    (s1, t1), (s2, t2) = points[2], points[4]
    bandwidth = (s2 - s1) / (t2 - t1)
    return max(0.0, t1 - s1 / bandwidth), bandwidth


def predict(steps: dict, comm: dict, T: int = 50) -> list[dict]:
    """The model: a step of N ranks takes one rank's step at its share of the batch, c(B/N),
    plus the gradient's allreduce, a = latency * ceil(log2 N) + 2 (N-1)/N * S / bandwidth (S the
    gradient's bytes; ring and recursive-doubling allreduce both move about that), plus the
    per-step agreement. On one machine the global batch stays B = 50 (the same training run);
    across M machines of 2 ranks each, every rank keeps b = 25 streams (B = 25 N: a larger
    batch, so fewer, larger steps), and the allreduce adds a ring between machines."""
    lat, bw = allreduce_fit(comm["allreduce_s_by_bytes"])
    out = []
    for name, c in steps.items():
        S = 4 * c["params"]
        for N, b in zip(RANKS, SHARES):
            a = 0.0 if N == 1 else lat * math.ceil(math.log2(N)) + 2 * (N - 1) / N * S / bw + comm["agree_s"]
            t = c[b] + a
            out.append({"row": name, "where": "one machine", "ranks": N, "batch": 50, "step_s": t,
                        "allreduce_share": a / t, "chars_per_s": 50 * T / t})
        for net, (nlat, nbw) in NETWORKS.items():
            for M in (2, 4):
                N = 2 * M
                a = lat + S / bw + 2 * (M - 1) * nlat + 2 * (M - 1) / M * S / nbw + comm["agree_s"]
                t = c[25] + a
                out.append({"row": name, "where": f"{M} machines, {net}", "ranks": N, "batch": 25 * N, "step_s": t,
                            "allreduce_share": a / t, "chars_per_s": 25 * N * T / t})
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default=",".join(r[0] for r in GRID))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-torch", dest="torch", action="store_false")
    p.add_argument("--scaling", action="store_true")
    p.add_argument("--rank-job", help=argparse.SUPPRESS)
    p.add_argument("--allreduce-job", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rank_job:
        return rank_job(args.rank_job, args.seconds)
    if args.allreduce_job:
        return allreduce_job()
    info = {**machine_info(), "threads": THREADS}
    print(json.dumps(info) if args.json else "# " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    corpus = load_corpus(corpus_path())
    if args.scaling:
        out = scaling(corpus, args.json)
        out["predicted"] = predict(out["steps"], out)
        if args.json:
            print(json.dumps(out))
            return None
        for p in out["predicted"]:
            print(f"predicted {p['row']:11s} {p['where']:20s} {p['ranks']:>2} ranks, B {p['batch']:>3}: "
                  f"{1000 * p['step_s']:8.2f} ms/step, {p['chars_per_s']:>10,.0f} chars/s, allreduce "
                  f"{100 * p['allreduce_share']:4.1f}% of the step")
        return None
    torch = args.torch and have_torch()
    for name in args.rows.split(","):
        row = next(r for r in GRID if r[0] == name)
        rec = row_figures(row, corpus, args.rounds, args.seconds, torch)
        if args.json:
            print(json.dumps(rec), flush=True)
            continue
        two = f"{rec['charlm_2_chars_per_s']:>9,.0f}" if "charlm_2_chars_per_s" in rec else "      n/a"
        line = f"{name:24s} charlm 1 worker {rec['charlm_1_chars_per_s']:>9,.0f} c/s  2 workers {two} c/s"
        if "speedup_2_over_1" in rec:
            line += f" ({rec['speedup_2_over_1']:.2f}x)"
        if torch:
            line += f"  torch {rec['torch_chars_per_s']:>9,.0f} c/s  ratio 1w {rec['ratio_1']:.2f}"
            line += f"  2w {rec['ratio_2']:.2f}" if "ratio_2" in rec else ""
        print(line, flush=True)
    return None


if __name__ == "__main__":
    main()
