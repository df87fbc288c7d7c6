"""How long a run trains (``Budget``) and its learning rate at each step (``Schedule``)."""

from __future__ import annotations

import math

from ..config import TrainConfig


class Budget:
    """The one answer to "how many steps in all" and "is the budget spent".

    ``total_steps``: the smaller of max_steps and epochs x steps per epoch (None when neither
    is set). ``spent`` names the limit reached: max_steps, epochs, max_minutes or
    early_stopping (``patience`` evaluations without an improvement of min_delta).
    """

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int):
        self.cfg = cfg
        limits = {}
        if cfg.max_steps is not None:
            limits["max_steps"] = cfg.max_steps
        if cfg.epochs is not None:
            limits["epochs"] = max(1, math.ceil(cfg.epochs * steps_per_epoch))
        self._step_limit = min(limits.items(), key=lambda kv: kv[1]) if limits else None
        self.total_steps = self._step_limit[1] if limits else None

    def spent(self, step: int, elapsed_s: float, stale_evals: int = 0) -> str | None:
        c = self.cfg
        if self._step_limit is not None and step >= self._step_limit[1]:
            return self._step_limit[0]
        if c.max_minutes is not None and elapsed_s >= 60.0 * c.max_minutes:
            return "max_minutes"
        if c.patience is not None and stale_evals >= c.patience:
            return "early_stopping"
        return None


class Schedule:
    """lr(step, epoch, elapsed_s): step counts from 0 for the first update, epoch counts
    finished epochs, elapsed_s is the run's time so far (``TrainState.elapsed_s``).

    constant: lr. step: lr * lr_decay ** (epoch // lr_decay_every). cosine and linear: a linear
    warm-up over warmup_steps, then lr until the last ``cooldown`` share of the run, then down
    to min_lr along half a cosine or a straight line (cooldown 1: from the end of the warm-up;
    less: warmup-stable-decay). The run's share is ``progress``: the schedule ends with
    whichever budget ends the run first, steps or minutes. A config then finishes its
    schedule on any machine; a slower one makes fewer steps instead of stopping with the
    learning rate still high.
    """

    def __init__(self, cfg: TrainConfig, total_steps: int | None):
        """``total_steps``: the run's ``Budget.total_steps`` (config.py makes sure a decaying
        schedule has it or train.max_minutes)."""
        self.cfg, self.total = cfg, total_steps

    def progress(self, step: int, elapsed_s: float) -> float:
        """How far through its decay the run is, in [0, 1]: the larger of the steps after the
        warm-up as a share of the rest of the step budget, and the time as a share of
        train.max_minutes."""
        c = self.cfg
        shares = [0.0]
        if self.total is not None:
            shares.append((step - c.warmup_steps) / max(1, self.total - c.warmup_steps))
        if c.max_minutes is not None:
            shares.append(elapsed_s / (60.0 * c.max_minutes))
        return min(1.0, max(shares))

    def __call__(self, step: int, epoch: int, elapsed_s: float = 0.0) -> float:
        c = self.cfg
        if c.lr_schedule == "step":
            return c.lr * c.lr_decay ** (epoch // c.lr_decay_every)
        if c.lr_schedule in ("cosine", "linear"):
            if step < c.warmup_steps:
                return c.lr * (step + 1) / c.warmup_steps
            hold = 1.0 - c.cooldown  # the share of the run spent at lr before the decay
            frac = max(0.0, self.progress(step, elapsed_s) - hold) / c.cooldown
            left = 0.5 * (1.0 + math.cos(math.pi * frac)) if c.lr_schedule == "cosine" else 1.0 - frac
            return c.min_lr + (c.lr - c.min_lr) * left
        return c.lr
