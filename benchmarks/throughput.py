"""Training-step throughput of charlm beside PyTorch, interleaved in one process.

    python -m benchmarks.throughput [--threads 2] [--json] [--rows lstm-1x128,...] [--repeats 3]

Each row times one full training step (forward, BPTT, clipping, Adam) on the same
tiny-Shakespeare windows, alternating the sides in ~0.5 s blocks so machine noise hits them
alike: charlm; charlm with ``blas.accumulate`` on NumPy's fallback (a product, then an add);
only the step's matrix products (the floor any NumPy step must spend); and PyTorch. Warm-up
steps are excluded. A repeat takes the median step of each side over at least --min-steps steps
and --min-seconds seconds; the row is repeated --repeats times and reports each ratio's median
and range over the repeats. Peak memory is the RSS growth of a fresh subprocess running a few
steps of one backend alone. Then evaluation, sampling and scoring.
"""

from __future__ import annotations

from .common import set_threads

THREADS = set_threads()

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from charlm.config import ModelConfig, TrainConfig  # noqa: E402
from charlm.network import blas
from charlm.network.cells import CELLS
from charlm.network.model import Model
from charlm.network.optim import clip_grad_norm, make_optimizer
from charlm.text.batches import Batches, eval_windows
from charlm.text.corpus import load_corpus, split

from .common import TorchTwin, corpus_path, have_torch, machine_info, status_kb  # noqa: E402

# (name, kind, layers, hidden, batch, seq)
GRID = [  # name, kind, layers, hidden, B, T, dropout between layers
    ("lstm-1x128", "lstm", 1, 128, 50, 50, 0.0),
    ("lstm-1x256", "lstm", 1, 256, 50, 50, 0.0),
    ("lstm-1x512", "lstm", 1, 512, 50, 50, 0.0),
    ("lstm-2x128", "lstm", 2, 128, 50, 50, 0.0),
    ("lstm-2x256", "lstm", 2, 256, 50, 50, 0.0),
    ("lstm-2x512", "lstm", 2, 512, 50, 50, 0.0),
    ("gru-2x256", "gru", 2, 256, 50, 50, 0.0),
    ("rnn-1x100-min-char-rnn", "rnn", 1, 100, 1, 25, 0.0),
    ("lstm-2x512-B64-T100", "lstm", 2, 512, 64, 100, 0.0),
    ("lstm-2x384-dropout-recipe", "lstm", 2, 384, 50, 50, 0.4),  # configs/lstm-shakespeare.yaml's model
]
TINY = ("tiny-lstm-1x16", "lstm", 1, 16, 4, 8, 0.0)


class CharlmStep:
    def __init__(self, kind, layers, hidden, V, batches, dropout=0.0):
        self.m = Model(ModelConfig(type=kind, hidden_size=hidden, num_layers=layers, dropout=dropout), V)
        self.rng = np.random.default_rng(0)
        self.m.init(self.rng)
        self.opt = make_optimizer(self.m.flat, TrainConfig())
        self.batches, self.k, self.state = batches, 0, None

    def step(self):
        if self.k % self.batches.num_windows == 0:
            self.state = self.m.zero_state(self.batches.B)
        x, y = self.batches.window(self.k % self.batches.num_windows)
        loss, self.state = self.m.loss_and_grad(x, y, self.state, self.rng)  # the rng draws dropout's masks
        clip_grad_norm(self.m.grad, 5.0)
        self.opt.step(self.m.grad, 2e-3)
        self.k += 1
        return loss


class FallbackStep(CharlmStep):
    """charlm's step with ``blas.accumulate`` on its NumPy fallback (``C += A @ B`` as a product
    into a temporary and an add), as where OpenBLAS cannot be asked: what the direct GEMM saves."""

    def step(self):
        gemm = blas._gemm
        blas._gemm = lambda dtype: None
        try:
            return super().step()
        finally:
            blas._gemm = gemm


class TorchStep:
    def __init__(self, kind, layers, hidden, V, batches, dropout=0.0):
        self.t = TorchTwin(kind, layers, hidden, V)
        self.t.rnn.dropout = dropout  # nn.LSTM's own, between layers, as charlm's
        self.t.torch.set_num_threads(THREADS)
        self.batches, self.k = batches, 0

    def step(self):
        if self.k % self.batches.num_windows == 0:
            self.t.reset()
        loss = self.t.step(*self.batches.window(self.k % self.batches.num_windows))
        self.k += 1
        return loss


class GemmFloor:
    """Only the matrix products of one charlm step, with charlm's shapes and orientations and
    nothing else: the time any NumPy + BLAS implementation of the same step must spend.

    Mirrors cells/base.py (project, project_backward), the per-step products of the cells and
    Model.loss_and_grad. torch_time / floor_time is therefore the best ratio charlm could reach
    on this row if every elementwise pass, copy and Python call were free. It mirrors products,
    not arrays, so it cannot read the cells' buffer declarations; instead
    tests/benchmarks/test_benchmarks.py records every matrix product of a real step and holds this list to
    it, so a kernel change the floor does not follow fails a test.
    """

    def __init__(self, kind, layers, hidden, V, batches):
        G, H, T, B = CELLS[kind].gates * hidden, hidden, batches.T, batches.B
        N, f32, rng = T * B, np.float32, np.random.default_rng(0)
        x, _ = batches.window(0)
        U = len(np.unique(x))  # distinct ids in a window: the one-hot gradient's width

        def a(*shape):
            return rng.standard_normal(shape, dtype=f32)

        self.layers = []
        for l in range(layers):
            D = U if l == 0 else H
            self.layers.append(dict(Wx=a(G, D), Wh=a(G, H), WhT=a(H, G), X=a(D, T, B), A_fm=a(G, N),
                                    A=a(T, G, B), Hs=a(T, H, B), HT=a(H, T, B), dA=a(G, N), gWh=a(G, H), gWx=a(G, D),
                                    gb=a(G), dx=a(D, N), rec=a(H, B), onehot=(l == 0)))
        self.W, self.L, self.Hout, self.gW, self.dH = a(V, H), a(V, N), a(H, N), a(V, H), a(H, N)
        self.gb, self.gbhn = a(V), a(H) if kind == "gru" else None  # the GRU's extra bias sums H rows
        self.T, self.N = T, N

    def forward(self):
        for c in self.layers:
            if not c["onehot"]:  # the one-hot layer's projection is a gather, not a product
                np.matmul(c["Wx"], c["X"].reshape(-1, self.N), out=c["A_fm"])
            for t in range(self.T):
                np.matmul(c["Wh"], c["Hs"][t], out=c["A"][t])
        np.matmul(self.W, self.Hout, out=self.L)

    def step(self):
        self.forward()
        ones = np.ones(self.N, np.float32)  # bias gradients are row sums, A @ 1 (cells/base.py)
        np.matmul(self.L, self.Hout.T, out=self.gW)
        np.matmul(self.L, ones, out=self.gb)
        np.matmul(self.W.T, self.L, out=self.dH)
        for c in reversed(self.layers):
            for t in range(self.T - 1, -1, -1):  # down to t=0: backward returns dh0 too
                np.matmul(c["WhT"], c["A"][t], out=c["rec"])
            N = c["dA"].shape[1]
            np.matmul(c["dA"], c["HT"].reshape(-1, N).T, out=c["gWh"])
            if self.gbhn is not None:
                np.matmul(c["dA"][: len(self.gbhn)], ones, out=self.gbhn)
            np.matmul(c["dA"], c["X"].reshape(-1, N).T, out=c["gWx"])
            if not c["onehot"]:  # (the one-hot layer's bias sums gWx's columns, no product)
                np.matmul(c["dA"], ones, out=c["gb"])
                np.matmul(c["Wx"].T, c["dA"], out=c["dx"])


def forward_flops(kind, layers, H, B, T, V) -> float:
    """Matmul FLOPs of one forward pass, the one-hot input counted as a dense (V, GH) product."""
    G = CELLS[kind].gates
    f = sum(2.0 * T * B * ((V if l == 0 else H) + H) * G * H for l in range(layers))
    return f + 2.0 * T * B * H * V


def gemm_peak(n=2048, reps=5) -> float:
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = a.copy()
    a @ b
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t)
    return 2.0 * n**3 / min(ts) / 1e9


def interleaved(sides: dict, min_steps: int, min_seconds: float, warmup: int = 3, block_seconds: float = 0.5) -> dict:
    """Alternate the sides in blocks of ~block_seconds until each has min_steps timed steps
    and min_seconds have passed; median seconds per step.

    Blocks, not single steps: right after one library's step its thread pool is still
    spin-waiting on the cores, which would slow the other's next step; the first step of
    every block is therefore run untimed, and machine noise still hits both sides alike.
    """
    for s in sides.values():
        for _ in range(warmup):
            s.step()
    times = {k: [] for k in sides}
    start = time.perf_counter()
    while min(len(v) for v in times.values()) < min_steps or time.perf_counter() - start < min_seconds:
        for k, s in sides.items():
            s.step()  # untimed: lets the other library's threads go idle
            t_block = time.perf_counter()
            while True:
                t = time.perf_counter()
                s.step()
                times[k].append(time.perf_counter() - t)
                if time.perf_counter() - t_block >= block_seconds:
                    break
    return {k: float(np.median(v)) for k, v in times.items()}


def spread(values) -> dict:
    """The median and range of one measure over a row's repeats."""
    return {"median": float(np.median(values)), "min": float(np.min(values)), "max": float(np.max(values))}


def memory_probe(backend: str, row_name: str) -> None:
    """Subprocess entry: print the peak RSS growth (bytes) of building + 3 steps of one backend."""
    row = next(r for r in GRID + [TINY] if r[0] == row_name)
    batches, V = load_batches(row[4], row[5])
    if backend == "torch":
        import torch  # noqa: F401  (imported before the baseline, like numpy)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark: corpus loading before this does not count
    base = status_kb("VmRSS")
    side = (CharlmStep if backend == "charlm" else TorchStep)(row[1], row[2], row[3], V, batches, row[6])
    for _ in range(3):
        side.step()
    print(max(0, status_kb("VmHWM") - base) * 1024)


def peak_memory(backend, row_name) -> int | None:
    r = subprocess.run([sys.executable, "-m", "benchmarks.throughput", "--threads", str(THREADS),
                        "--memory-probe", backend, row_name], capture_output=True, text=True)
    try:
        return int(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


_CORPUS = None


def load_batches(B, T):
    global _CORPUS
    if _CORPUS is None:
        _CORPUS = load_corpus(corpus_path())
    train_ids, _ = split(_CORPUS.ids, 0.1)
    return Batches(train_ids, B, T), len(_CORPUS.vocab)


def run_grid(rows, args, peak) -> list[dict]:
    out = []
    for name, kind, L, H, B, T, dropout in rows:
        batches, V = load_batches(B, T)
        sides = {"charlm": CharlmStep(kind, L, H, V, batches, dropout),
                 "fallback": FallbackStep(kind, L, H, V, batches, dropout), "gemm": GemmFloor(kind, L, H, V, batches)}
        if args.torch:
            sides["torch"] = TorchStep(kind, L, H, V, batches, dropout)
        repeats = [interleaved(sides, args.min_steps, args.min_seconds) for _ in range(args.repeats)]
        med = {k: float(np.median([r[k] for r in repeats])) for k in sides}
        chars, flops = B * T, 3 * forward_flops(kind, L, H, B, T, V)
        rec = {"row": name, "threads": THREADS, "repeats": args.repeats, "charlm_chars_per_s": chars / med["charlm"],
               "charlm_gflops": flops / med["charlm"] / 1e9}
        rec["charlm_frac_peak"] = rec["charlm_gflops"] / peak
        rec["gemm_share"] = med["gemm"] / med["charlm"]  # of charlm's step, time in its GEMMs alone
        # what accumulate's direct GEMM saves: the fallback's step over charlm's (1.0 for the GRU,
        # whose recurrent products are not accumulated)
        rec["accumulate_gain"] = spread([r["fallback"] / r["charlm"] for r in repeats])
        if args.torch:
            rec.update(torch_chars_per_s=chars / med["torch"], ratio=spread([r["torch"] / r["charlm"] for r in repeats]),
                       torch_gflops=flops / med["torch"] / 1e9, bound=med["torch"] / med["gemm"])
        if args.memory:
            rec["charlm_peak_mb"] = (peak_memory("charlm", name) or 0) / 2**20
            if args.torch:
                rec["torch_peak_mb"] = (peak_memory("torch", name) or 0) / 2**20
        out.append(rec)
        emit(rec, args)
    return out


def emit(rec, args):
    if args.json:
        print(json.dumps(rec), flush=True)
        return
    def ratio(r):
        return f"{r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f})"

    parts = [f"{rec['row']:26s}", f"charlm {rec['charlm_chars_per_s']:>10,.0f} c/s"]
    if "torch_chars_per_s" in rec:
        parts += [f"torch {rec['torch_chars_per_s']:>10,.0f} c/s", f"ratio {ratio(rec['ratio'])}",
                  f"bound {rec['bound']:5.2f}"]
    parts += [f"accumulate {ratio(rec['accumulate_gain'])}"]
    parts += [f"{rec['charlm_gflops']:6.1f} GFLOP/s ({100 * rec['charlm_frac_peak']:4.1f}% of peak)",
              f"GEMMs {100 * rec['gemm_share']:3.0f}% of step"]
    if "charlm_peak_mb" in rec:
        parts += [f"mem charlm {rec['charlm_peak_mb']:.0f} MB" + (f" torch {rec['torch_peak_mb']:.0f} MB" if "torch_peak_mb" in rec else "")]
    print("  ".join(parts), flush=True)


def run_inference(args) -> list[dict]:
    """Evaluation of the whole validation split, sampling 1,000 characters, scoring 1,000 lines."""
    from charlm.use.sample import sample
    from charlm.use.score import evaluate, score_texts

    kind, L, H = args.inference_model
    corpus = load_corpus(corpus_path()) if _CORPUS is None else _CORPUS
    V = len(corpus.vocab)
    _, val = split(corpus.ids, 0.1)
    m = Model(ModelConfig(type=kind, hidden_size=H, num_layers=L), V)
    m.init(np.random.default_rng(0))
    tw = TorchTwin(kind, L, H, V) if args.torch else None
    lines = [ln for ln in corpus.vocab.decode(corpus.ids[:200_000]).split("\n") if ln][:1000]
    # The evaluation's matrix products alone: a forward-only GemmFloor per window of the split.
    floor, windows = GemmFloor(kind, L, H, V, load_batches(50, 50)[0]), sum(1 for _ in eval_windows(val, 50, 50))
    tasks = {
        "eval-val-split": (lambda: evaluate(m, val, 50, 50), (lambda: tw.evaluate(val, 50, 50)) if tw else None,
                           lambda: [floor.forward() for _ in range(windows)]),
        "sample-1000": (lambda: "".join(sample(m, corpus.vocab, 1000, seed=0)),
                        (lambda: torch_sample(tw, corpus.vocab, 1000)) if tw else None, None),
        "score-1000-lines": (lambda: score_texts(m, corpus.vocab, lines),
                             (lambda: torch_score(tw, corpus.vocab, lines)) if tw else None, None),
    }
    out = []
    for name, (ours, theirs, gemms) in tasks.items():
        ts = {"charlm": [], "torch": [], "gemm": []}
        for _ in range(args.inference_reps):
            for side, f in (("charlm", ours), ("torch", theirs), ("gemm", gemms)):
                if f is None:
                    continue
                t = time.perf_counter()
                f()
                ts[side].append(time.perf_counter() - t)
        rec = {"task": name, "model": f"{kind} {L}x{H}", "charlm_s": float(np.median(ts["charlm"]))}
        if ts["torch"]:
            rec["torch_s"] = float(np.median(ts["torch"]))
            rec["ratio"] = rec["torch_s"] / rec["charlm_s"]
        if ts["gemm"]:
            rec["gemm_share"] = float(np.median(ts["gemm"])) / rec["charlm_s"]
            if "torch_s" in rec:
                rec["bound"] = rec["torch_s"] / float(np.median(ts["gemm"]))
        out.append(rec)
        if args.json:
            print(json.dumps(rec), flush=True)
        else:
            extra = f"  torch {rec['torch_s']:.3f} s  ratio {rec['ratio']:.2f}" if "torch_s" in rec else ""
            extra += f"  bound {rec['bound']:.2f}" if "bound" in rec else ""
            extra += f"  GEMMs {100 * rec['gemm_share']:.0f}% of charlm's time" if "gemm_share" in rec else ""
            print(f"{name:18s} ({rec['model']})  charlm {rec['charlm_s']:.3f} s{extra}", flush=True)
    return out


def torch_sample(tw, vocab, n):
    """PyTorch's per-character loop at batch 1: one-hot, RNN step, linear, softmax, multinomial."""
    torch = tw.torch
    g = torch.Generator().manual_seed(0)
    out, state = [], None
    x = torch.tensor([[vocab.chars.index("\n")]])
    with torch.no_grad():
        for _ in range(n):
            h, state = tw.rnn(tw.eye[x], state)
            p = torch.softmax(tw.head(h[0, 0]), dim=-1)
            i = int(torch.multinomial(p, 1, generator=g))
            out.append(vocab.chars[i])
            x[0, 0] = i
    return "".join(out)


def torch_score(tw, vocab, lines, batch_size=64):
    """The same batching as charlm's scorer: sort by length, pad, mask, one forward per batch."""
    ctx = vocab.encode("\n")
    enc = [vocab.encode(t) for t in lines]
    order = np.argsort([len(e) for e in enc], kind="stable")
    res = np.zeros(len(lines))
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        seqs = [enc[i] for i in idx]
        Tn = 1 + max(len(q) for q in seqs)
        full = np.zeros((Tn, len(seqs)), np.int64)
        mask = np.zeros((Tn - 1, len(seqs)), bool)
        full[0] = ctx[0]
        for b, q in enumerate(seqs):
            full[1 : 1 + len(q), b] = q
            mask[: len(q), b] = True
        nll, _ = tw.nll_sum(full[:-1], full[1:], None)
        res[idx] = -(nll * mask).sum(axis=0)
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="BLAS/torch threads for both (default 2)")
    p.add_argument("--rows", default=None, help="comma-separated row names (default: the whole grid)")
    p.add_argument("--min-steps", type=int, default=20, help="per side and repeat")
    p.add_argument("--min-seconds", type=float, default=5.0, help="per repeat, all sides together")
    p.add_argument("--repeats", type=int, default=3, help="each row this many times, for the ratios' range")
    p.add_argument("--json", action="store_true", help="JSON Lines instead of a table")
    p.add_argument("--no-torch", dest="torch", action="store_false", help="charlm only")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory subprocesses")
    p.add_argument("--no-inference", dest="inference", action="store_false")
    p.add_argument("--inference-reps", type=int, default=3)
    p.add_argument("--inference-model", default="lstm,2,256", help="KIND,LAYERS,HIDDEN for the eval/sample/score tasks")
    p.add_argument("--tiny", action="store_true", help="one tiny row, for the smoke test")
    p.add_argument("--memory-probe", nargs=2, metavar=("BACKEND", "ROW"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    kind, layers, hidden = args.inference_model.split(",")
    args.inference_model = (kind, int(layers), int(hidden)) if not args.tiny else ("lstm", 1, 16)
    if args.memory_probe:
        return memory_probe(*args.memory_probe)
    args.torch = args.torch and have_torch()
    rows = [TINY] if args.tiny else [r for r in GRID if args.rows is None or r[0] in args.rows.split(",")]
    info = {**machine_info(), "threads": THREADS, "date": time.strftime("%Y-%m-%d")}
    peak = gemm_peak(512 if args.tiny else 2048)
    info["gemm_peak_gflops"] = peak
    print(json.dumps(info) if args.json else "# " + ", ".join(f"{k} {v if not isinstance(v, float) else round(v, 1)}" for k, v in info.items()), flush=True)
    results = run_grid(rows, args, peak)
    if args.inference:
        results += run_inference(args)
    return results


if __name__ == "__main__":
    main()
