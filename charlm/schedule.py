"""Learning-rate schedules: lr as a function of the step and the epoch."""

from __future__ import annotations

import math

from .config import TrainConfig


def total_steps(cfg: TrainConfig, steps_per_epoch: int) -> int | None:
    """The step budget implied by max_steps and epochs (the smaller), or None if neither is set."""
    limits = []
    if cfg.max_steps is not None:
        limits.append(cfg.max_steps)
    if cfg.epochs is not None:
        limits.append(max(1, math.ceil(cfg.epochs * steps_per_epoch)))
    return min(limits) if limits else None


class Schedule:
    """lr(step, epoch): step counts from 0 for the first update, epoch counts finished epochs.

    constant: lr. step: lr * lr_decay ** (epoch // lr_decay_every). cosine: linear warm-up over
    warmup_steps, then a half cosine from lr down to min_lr at the last step.
    """

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int):
        self.cfg = cfg
        self.total = total_steps(cfg, steps_per_epoch)  # config.py makes sure cosine has one

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
