"""``charlm train CORPUS --minutes N``: choose the model and schedule for a time budget on this
machine.

The rule (the data behind it: docs/performance.md, "Best model for a time budget", from
``python -m benchmarks.sweep``): on tiny Shakespeare, with Adam and a cosine schedule that ends
at the budget, the best model for a budget is the largest candidate that still makes at least
MIN_STEPS optimizer steps in it; a larger one is still under-trained when time runs out, a
smaller one stops improving. Short budgets (up to 3 minutes) get a higher learning rate, no
dropout and a smaller batch of longer windows; long ones (30 minutes and more) a deeper
candidate, more dropout and a lower learning rate. So each candidate's step time is measured
here with its tier's batch and window (3 steps after a warm-up one), and the largest that
reaches MIN_STEPS wins, or the smallest if none does. The sweep ran with a cosine schedule;
the recipes use warmup-stable-decay, which measured better at 1 and 10 minutes (BASE).

The corpus counts too (docs/own-text.md has the runs on five corpora the rule comes from): a
budget that allows more than MAX_PASSES passes over the training split is spent on a schedule
of MAX_PASSES passes with dropout 0.5 and early stopping, and a candidate only has to complete
that schedule to qualify. A corpus of up to MIX_MAX_CHARS characters gets a 5-gram mixed in
(model.ngram_order): on a small corpus the network alone loses to it.

``finetune_recipe`` is the recipe for ``--from``: the source's model and a schedule of
FINETUNE_PASSES passes, or what the budget holds if that is less.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import Config, DataConfig
from ..predict.ngram import MAX_KEY, ORDER
from ..text.corpus import Corpus, split_sizes

# Every measured number behind these choices is in docs/performance.md ("Best model for a time
# budget") and docs/own-text.md; the comments say what each choice is for.
#
# Smallest to largest; each a set of config overrides on top of BASE. Only sizes the sweep
# measured are candidates.
CANDIDATES = [
    ("lstm 1x128", {"model": {"num_layers": 1, "hidden_size": 128}}),
    ("lstm 1x256", {"model": {"num_layers": 1, "hidden_size": 256}}),
    ("lstm 2x256", {"model": {"num_layers": 2, "hidden_size": 256}}),
    ("lstm 2x384", {"model": {"num_layers": 2, "hidden_size": 384}}),
]
# Budgets between 3 and 30 minutes: about a dozen passes over tiny Shakespeare, where dropout 0.4
# beat 0.3 and 0.2 (configs/lstm-shakespeare.yaml). The learning rate holds at its peak and falls
# linearly to min_lr over the last fifth of whichever budget binds (warmup-stable-decay): on a
# machine that fits half the planned steps in the minutes, that beat a cosine fitted to the
# minutes by 0.05 nats/char and a cosine cut short by 0.02 (docs/performance.md).
BASE = {
    "model": {"type": "lstm", "dropout": 0.4},
    "data": {"batch_size": 50, "seq_length": 50},
    "train": {"optimizer": "adam", "lr": 0.003, "grad_clip": 5.0, "lr_schedule": "linear", "cooldown": 0.2,
              "min_lr": 0.0001, "epochs": None},
}
# Short budgets: the model barely fits the data, so a higher learning rate, no dropout, and
# more, smaller steps (batches of 32 windows of 64 characters) won (configs/lstm-1min.yaml).
SHORT_MINUTES = 3.0
SHORT = {"model": {"dropout": 0.0}, "data": {"batch_size": 32, "seq_length": 64}, "train": {"lr": 0.005}}
# Long budgets: tens of passes, where LSTM 2x512 with dropout 0.4 stopped improving early. So a
# third layer joins the candidates (dropout acts between layers: two sites instead of one), with
# dropout 0.5, lr 2e-3 and a longer warm-up (configs/lstm-60min.yaml).
LONG_MINUTES = 30.0
LONG = {"model": {"dropout": 0.5}, "train": {"lr": 0.002, "warmup_steps": 200}}
LONG_CANDIDATES = [("lstm 3x512", {"model": {"num_layers": 3, "hidden_size": 512}})]
# The best model at each measured budget made at least this many steps; one making fewer lost
# to a smaller one.
MIN_STEPS = 1500
# Past about 30 passes even the dropout-0.4/0.5 Shakespeare models had stopped improving; a
# small corpus gets there in a fraction of the budget (docs/own-text.md).
MAX_PASSES = 30
MANY_PASSES = {"model": {"dropout": 0.5}, "train": {"patience": 3}}
# Mixing in a 5-gram lowered the loss on every corpus measured, tiny Shakespeare included; up to
# this size its counts fit in a checkpoint and take seconds (docs/own-text.md).
MIX_MAX_CHARS = 5_000_000
MIX = {"model": {"ngram_order": ORDER}}
# Fine-tuning (--from): the source's model and the short tier's batch shape; lr 3e-3 beat 1e-3
# and 2e-3 on all three corpora tried, and longer schedules were as good or better
# (docs/own-text.md, "The fine-tuning recipe"). No early stopping: the schedule already ends
# within the budget, and stopping with the learning rate still high cost pydoc's 10-minute
# fine-tuning its win over a new model (best.npz keeps the best evaluation either way).
FINETUNE = {
    "data": {"batch_size": 32, "seq_length": 64},
    "train": {"optimizer": "adam", "lr": 0.003, "grad_clip": 5.0, "lr_schedule": "cosine", "min_lr": 0.0001,
              "epochs": None},
}
FINETUNE_PASSES = MAX_PASSES
# A fine-tuning that makes many passes over a small text overfits with the source's own dropout:
# on pydoc (27 passes in 10 minutes) 0.5 instead of the bundled model's 0.2 won; 9.7 passes
# over the licence texts did well with 0.2. Between the two, the boundary is a guess.
FINETUNE_DROPOUT_PASSES = 15
FINETUNE_DROPOUT = 0.5


def tier(minutes: float) -> tuple[dict, list]:
    """The overrides and the candidates for a budget of ``minutes``."""
    if minutes <= SHORT_MINUTES:
        return SHORT, CANDIDATES
    if minutes >= LONG_MINUTES:
        return LONG, CANDIDATES + LONG_CANDIDATES
    return {}, CANDIDATES


@dataclass
class Choice:
    name: str
    config: dict  # a raw config (sections of keys), to be validated and overlaid by the user's
    seconds_per_step: float
    steps: int
    measured: list[tuple[str, float, int]]  # every candidate: (name, seconds per step, steps in the budget)
    notes: list[str] = field(default_factory=list)  # what the corpus changed
    need: int = MIN_STEPS  # the steps a candidate had to make in the budget

    def reason(self, minutes: float) -> str:
        table = ", ".join(f"{n} {s * 1000:.0f} ms/step -> {k:,} steps" for n, s, k in self.measured)
        unit = "minute" if minutes == 1 else "minutes"
        return (f"chose {self.name} for {minutes:g} {unit}: the largest model that makes at least "
                f"{self.need:,} steps in the budget ({table}); its schedule ends at step {self.steps:,}, "
                f"or with the budget if that comes first"
                + "".join(f"; {n}" for n in self.notes))


def merge(*dicts) -> dict:
    """Raw configs (sections of keys) overlaid left to right."""
    out: dict = {}
    for d in dicts:
        for section, keys in d.items():
            out.setdefault(section, {}).update(keys)
    return out


def choose(corpus: Corpus, minutes: float, measure=None, val_fraction: float = DataConfig.val_fraction,
           workers=None) -> Choice:
    """Time every candidate for the budget on ``corpus`` (``measure(raw config) -> seconds per
    step``, by default a few real training steps, by all ``workers`` together) and apply the rule."""
    measure = measure or _seconds_per_step(corpus, workers)
    tier_overrides, candidates = tier(minutes)
    tier_overrides = merge(tier_overrides, _shared_batch(merge(BASE, tier_overrides), workers))
    budget_s = 60.0 * minutes * 0.95  # evaluations take the rest
    cap = _pass_steps(corpus, val_fraction, merge(BASE, tier_overrides)["data"], MAX_PASSES)
    measured = []
    for name, overrides in candidates:
        sec = measure(merge(BASE, tier_overrides, overrides))
        measured.append((name, sec, max(1, int(budget_s / sec))))
    need = min(MIN_STEPS, cap)
    fits = [m for m in measured if m[2] >= need]
    name, sec, steps = fits[-1] if fits else measured[0]
    many, small = steps > cap, _small(corpus, val_fraction)
    notes = ([f"the budget holds more than {MAX_PASSES} passes over this corpus: {MAX_PASSES} passes with dropout "
              "0.5 and early stopping"] if many else []) + ([f"a {ORDER}-gram mixed in (model.ngram_order {ORDER})"] if small else [])
    corpus_overrides = merge(MANY_PASSES if many else {}, MIX if small else {})
    steps = min(steps, cap)
    overrides = merge(dict(candidates)[name], tier_overrides, corpus_overrides)
    return Choice(name, merge(BASE, {"train": _schedule(steps, minutes)}, overrides), sec, steps, measured, notes,
                  need)


def finetune_recipe(source: Config, corpus: Corpus, minutes: float | None = None, measure=None,
                    val_fraction: float = DataConfig.val_fraction, workers=None) -> Choice:
    """The fine-tuning recipe for ``source``'s model on ``corpus``: FINETUNE_PASSES passes, or
    the steps that ``minutes`` holds if fewer (timed as ``choose`` times its candidates)."""
    model = {**source.to_dict()["model"], **(MIX["model"] if _small(corpus, val_fraction) else {"ngram_order": 0})}
    raw = merge(FINETUNE, {"model": model})
    raw = merge(raw, _shared_batch(raw, workers))
    steps = _pass_steps(corpus, val_fraction, raw["data"], FINETUNE_PASSES)
    sec, measured = 0.0, []
    if minutes is not None:
        sec = (measure or _seconds_per_step(corpus, workers))(raw)
        budget = max(1, int(60.0 * minutes * 0.95 / sec))
        measured = [("source model", sec, budget)]
        steps = min(steps, budget)
    name = f"{source.model.type} {source.model.num_layers}x{source.model.hidden_size}"
    notes = [f"lr {FINETUNE['train']['lr']:g}, cosine over {steps:,} steps (at most {FINETUNE_PASSES} passes)"]
    if steps > _pass_steps(corpus, val_fraction, raw["data"], FINETUNE_DROPOUT_PASSES):
        raw["model"]["dropout"] = max(raw["model"]["dropout"], FINETUNE_DROPOUT)
        notes.append(f"dropout {raw['model']['dropout']:g} (more than {FINETUNE_DROPOUT_PASSES} passes)")
    notes += [f"a {ORDER}-gram mixed in"] if model["ngram_order"] else []
    return Choice(name, merge(raw, {"train": _schedule(steps, minutes)}), sec, steps, measured, notes)


def _schedule(steps: int, minutes: float | None) -> dict:
    evals = max(1, steps // 20)  # about 20 evaluations (and samples) over the run
    return {"max_steps": steps, "max_minutes": minutes, "warmup_steps": min(100, steps // 10),
            "eval_every": evals, "checkpoint_every": evals}


def _shared_batch(raw: dict, workers) -> dict:
    """``raw``'s batch size as the nearest multiple of the workers, so each trains an equal share
    of the streams (data.batch_size 50 with 3 workers: 51); nothing changes for one process."""
    n, b = (1 if workers is None else workers.size), raw["data"]["batch_size"]
    return {"data": {"batch_size": max(1, round(b / n)) * n}}


def _small(corpus: Corpus, val_fraction: float) -> bool:
    """Small enough for the mixture: its characters, and its vocabulary for the n-gram's keys."""
    return split_sizes(len(corpus), val_fraction)[0] <= MIX_MAX_CHARS and len(corpus.vocab) ** ORDER < MAX_KEY


def _pass_steps(corpus: Corpus, val_fraction: float, data: dict, passes: float) -> int:
    """Steps that make ``passes`` passes over the training split with ``data``'s batch shape."""
    return max(1, int(passes * split_sizes(len(corpus), val_fraction)[0] / (data["batch_size"] * data["seq_length"])))


def _seconds_per_step(corpus: Corpus, workers=None):
    from .trainer import Trainer

    def measure(raw: dict) -> float:
        cfg = Config.from_dict(merge(raw, {"train": {"max_steps": 100000}}), name="probe")
        return Trainer(cfg, corpus, workers=workers).seconds_per_step()

    return measure
