"""Quality per minute: validation loss against wall-clock training time, charlm beside PyTorch.

    python -m benchmarks.quality --minutes 10 [--config configs/lstm-shakespeare.yaml] [--threads 2]

Trains the config's model with charlm and the same model in PyTorch (same initial weights,
batch, seq, optimizer, lr schedule, clipping, data order), each for the same training-time
budget on the same cores, taking turns: each side trains for --block seconds of its own
training time, then the other (a pause between turns lets the last library's threads go idle),
so a machine that slows down for a while slows both alike. The whole validation split is
evaluated after every minute of a side's training; evaluation time is not counted as training
time. The curves compare
the networks; a config with an n-gram mixture (model.ngram_order) has charlm's mixed loss
printed beside its network's.

A cosine schedule ends where each side's budget ends, as in `charlm train` with
train.max_minutes (charlm/network/schedule.py): each side's schedule follows its own training time,
so the side that steps faster gets more steps inside the schedule (instead of extra steps at
the minimum learning rate after a schedule sized in steps for someone else's speed).

    python -m benchmarks.quality --steps 2900 [--side charlm|torch] [--threads 1]

A budget of steps instead: each side makes exactly that many steps with the schedule over
them, evaluated after each tenth. It measures what a step is worth, apart from what it costs:
time plays no part, so the sides need neither turns nor a quiet machine, and two processes
(``--side charlm`` and ``--side torch``, one thread each) can run at once.

With either budget PyTorch's side is given charlm's dropout masks (the ones the charlm side
draws for the seed, replayed), so the two runs differ by rounding and speed, not by their
masks' luck; its step still pays for drawing its own (``mask_replay``).
"""

from __future__ import annotations

from .common import set_threads

THREADS = set_threads()

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

from charlm.config import load_config  # noqa: E402
from charlm.training.trainer import Trainer

from .common import ROOT, TorchTwin, corpus_path, have_torch, machine_info  # noqa: E402


def run_charlm(cfg, budget, log):
    tr = Trainer(cfg, corpus_path(), out_dir=None)

    def evaluate():
        """The network's loss, which the PyTorch side can match; a mixture's too, beside it."""
        r = tr.evaluate()
        if "val_loss_net" in r:
            return {"val_loss": r["val_loss_net"], "val_loss_mixed": r["val_loss"]}
        return {"val_loss": r["val_loss"]}

    return Curve("charlm", budget, lambda trained_s: tr.train_step(), evaluate, log)


def run_torch(cfg, budget, log):
    from charlm.network.schedule import Budget, Schedule
    from charlm.text.batches import Batches
    from charlm.text.corpus import load_corpus, split

    corpus = load_corpus(corpus_path())
    train_ids, val = split(corpus.ids, cfg.data.val_fraction)
    b = Batches(train_ids, cfg.data.batch_size, cfg.data.seq_length)
    t = cfg.train
    tw = torch_twin(cfg)
    replay = mask_replay(cfg)
    sched = Schedule(t, Budget(t, b.num_windows).total_steps)
    pos = {"step": 0, "masks": None}

    def prepare():
        """Untimed: charlm's masks for the next step (the step pays for PyTorch's own draw)."""
        pos["masks"] = replay(b.T, b.B) if replay else None

    def step(trained_s):
        k = pos["step"] % b.num_windows
        if k == 0:
            tw.reset()
        for g in tw.opt.param_groups:
            g["lr"] = sched(pos["step"], pos["step"] // b.num_windows, trained_s)
        tw.rnn.train()
        loss = tw.step(*b.window(k), masks=pos["masks"])
        pos["step"] += 1
        return loss

    def evaluate():
        tw.rnn.eval()
        return {"val_loss": float(tw.evaluate(val, cfg.data.batch_size, cfg.data.seq_length))}

    return Curve("torch", budget, step, evaluate, log, prepare)


def torch_twin(cfg):
    """The PyTorch model of the config, starting from the very weights charlm starts from for
    this seed (a fresh Trainer's), so the initial draw is not one of the differences measured.
    Its dropout is nn.LSTM's own; run_torch multiplies in charlm's masks instead (mask_replay)."""
    m, t = cfg.model, cfg.train
    start = Trainer(cfg, corpus_path(), out_dir=None).model
    tw = TorchTwin(m.type, m.num_layers, m.hidden_size, start.V, lr=t.lr, clip=t.grad_clip, seed=t.seed,
                   weight_decay=t.weight_decay, betas=(t.beta1, t.beta2), eps=t.eps)
    tw.load(start)
    tw.torch.set_num_threads(THREADS)
    tw.rnn.dropout = m.dropout
    return tw


def mask_replay(cfg):
    """-> masks(T, B): the dropout masks charlm's trainer draws for its next window, as (T, B, H)
    tensors for TorchTwin.step, or None where PyTorch's side cannot have them.

    The trainer's generator is seeded by train.seed and first draws the initial weights; a
    fresh Trainer's is at the very state the charlm side's is at step 0, and charlm draws
    nothing else in a step when its only noise is dropout between layers. With the same masks
    the two sides differ in PyTorch's second bias per gate row (both of its biases take a full
    step, as its users' models do; charlm has one) and float32 rounding; with each side's own
    masks, the masks alone spread the runs by about 0.009 nats/char at the end
    (docs/performance.md, "How to measure": quality.py). The
    replayed masks are drawn outside PyTorch's step time, and its step still draws (and drops)
    nn.LSTM's own, so a time budget charges it what dropout costs its users (TorchTwin.step).
    """
    import numpy as np
    import torch

    from charlm.network.cells.base import dropout_mask
    from charlm.network.model import dropout_sites

    m = cfg.model
    if not m.dropout or m.variational_dropout:
        return None
    rng, sites = Trainer(cfg, corpus_path(), out_dir=None).state.rng, dropout_sites(m)
    dtype = np.dtype(m.dtype)

    def masks(T, B):
        drawn = [dropout_mask(rng, m.dropout, np.empty((m.hidden_size, T, B), dtype)) for _ in sites]
        return [torch.from_numpy(d).permute(1, 2, 0).float() for d in drawn]  # (H, T, B) -> (T, B, H)

    return masks


class SideBudget:
    """What ends a side's run and when it is evaluated: ``minutes`` of training time (an
    evaluation after each minute), or ``steps`` (one after each tenth)."""

    def __init__(self, minutes=None, steps=None):
        self.by_steps = steps is not None
        self.total = steps if self.by_steps else 60.0 * minutes
        self.every = max(1, steps // 10) if self.by_steps else 60.0


class Curve:
    """One side's run: ``advance(until)`` trains (``step(training seconds so far)``) until
    ``until`` of the budget (seconds of training time, or steps), evaluating as the budget
    says (``evaluate()`` -> a dict with the network's "val_loss")."""

    def __init__(self, name, budget, step, evaluate, log, prepare=None):
        self.name, self.budget, self.step, self.evaluate, self.log = name, budget, step, evaluate, log
        self.prepare = prepare  # called before each step, outside its time
        self.trained, self.next_eval, self.steps, self.points = 0.0, budget.every, 0, []

    @property
    def progress(self):
        return self.steps if self.budget.by_steps else self.trained

    @property
    def done(self) -> bool:
        return self.progress >= self.budget.total

    def advance(self, until) -> None:
        while self.progress < min(until, self.budget.total):
            if self.prepare:
                self.prepare()
            t = time.perf_counter()
            self.step(self.trained)
            self.trained += time.perf_counter() - t
            self.steps += 1
            if self.progress >= self.next_eval or self.done:
                self.points.append({"backend": self.name, "minutes": round(self.trained / 60, 2), "steps": self.steps,
                                    **self.evaluate()})
                self.log(self.points[-1])
                self.next_eval += self.budget.every


def take_turns(curves: list[Curve], block: float, pause_s: float = 0.5) -> None:
    """Advance each side by ``block`` of its budget (seconds or steps) in turn until all are done."""
    until = 0.0
    while not all(c.done for c in curves):
        until += block
        for c in curves:
            if not c.done:
                c.advance(until)
                time.sleep(pause_s)  # the other library's thread pool stops spinning


def chart(curves, width=50, lo=None, hi=None, by_steps=False):
    """A plain-text chart: one row per evaluation, a bar per backend (shorter is better)."""
    vals = [p["val_loss"] for c in curves.values() for p in c]
    lo = min(vals) - 0.05 if lo is None else lo
    hi = max(vals) if hi is None else hi
    lines = []
    n = max(len(c) for c in curves.values())
    for i in range(n):
        for name, c in curves.items():
            if i < len(c):
                p = c[i]
                bar = "#" * max(1, int(round(width * (p["val_loss"] - lo) / max(1e-9, hi - lo))))
                at = f"{p['steps']:6d} steps" if by_steps else f"{p['minutes']:5.1f} min"
                lines.append(f"{at} {name:6s} {p['val_loss']:.3f} {bar}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=10.0, help="training time per side")
    budget.add_argument("--steps", type=int, help="steps per side instead of minutes, the schedule over them")
    p.add_argument("--config", default=str(ROOT / "configs" / "lstm-shakespeare.yaml"))
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--block", type=float, default=10.0, help="seconds of training time per turn (minutes only)")
    p.add_argument("--side", choices=("both", "charlm", "torch"), default="both",
                   help="train one side only (torch: where PyTorch is installed)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if (args.steps is not None and args.steps < 1) or args.minutes <= 0:
        p.error("the budget must be positive")
    budget = SideBudget(steps=args.steps) if args.steps else SideBudget(minutes=args.minutes)
    # Only the benchmark's budget ends the schedule (and the run): not the config's steps or minutes.
    limit = [f"train.max_steps={args.steps}", "train.max_minutes=null"] if args.steps else [
        f"train.max_minutes={args.minutes}", "train.max_steps=null"]
    cfg = load_config(args.config, args.overrides + limit + ["train.epochs=null"])
    info = {**machine_info(), "threads": THREADS, "config": cfg.name,
            **({"steps": args.steps} if args.steps else {"minutes": args.minutes})}
    print(json.dumps(info) if args.json else "# " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    log = (lambda r: print(json.dumps(r), flush=True)) if args.json else (
        lambda r: print(f"{r['backend']:6s} {r['minutes']:6.2f} min  step {r['steps']:6d}  val {r['val_loss']:.4f} nats/char"
                        + (f" (mixed with the n-gram {r['val_loss_mixed']:.4f})" if "val_loss_mixed" in r else ""),
                        flush=True))
    sides = [run_charlm(cfg, budget, log)] if args.side in ("both", "charlm") else []
    if args.side in ("both", "torch") and have_torch():
        sides.append(run_torch(cfg, budget, log))
    if not sides:
        p.error("--side torch needs PyTorch (pip install torch==2.13.0)")
    # Turns share a machine's slow spells out between the sides; a step budget has no use for them.
    take_turns(sides, budget.total if budget.by_steps else args.block)
    curves = {c.name: c.points for c in sides}
    if not args.json:
        print(chart(curves, by_steps=budget.by_steps))
    return curves


if __name__ == "__main__":
    main()
