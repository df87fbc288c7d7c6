"""How long a run trains (``Budget``) and its learning rate at each step (``Schedule``)."""

from __future__ import annotations

import math

from .config import TrainConfig


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
    """lr(step, epoch): step counts from 0 for the first update, epoch counts finished epochs.

    constant: lr. step: lr * lr_decay ** (epoch // lr_decay_every). cosine: linear warm-up over
    warmup_steps, then a half cosine from lr down to min_lr at the last step of the budget.
    """

    def __init__(self, cfg: TrainConfig, total_steps: int | None):
        """``total_steps``: the run's ``Budget.total_steps`` (config.py makes sure cosine has one)."""
        self.cfg, self.total = cfg, total_steps

    def __call__(self, step: int, epoch: int) -> float:
        c = self.cfg
        if c.lr_schedule == "step":
            return c.lr * c.lr_decay ** (epoch // c.lr_decay_every)
        if c.lr_schedule == "cosine":
            if step < c.warmup_steps:
                return c.lr * (step + 1) / c.warmup_steps
            span = max(1, self.total - c.warmup_steps)
            frac = min(1.0, (step - c.warmup_steps) / span)
            return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1.0 + math.cos(math.pi * frac))
        return c.lr
