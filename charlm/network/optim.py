"""Optimizers over the model's flat parameter vector, with PyTorch's update formulas.

One interface: ``step(grad, lr)`` updates ``params`` in place. State is a few flat arrays
(``state``, slot name -> (P,) array) plus a step count, so a checkpoint can save it per
parameter name and restore it exactly. Every update is a handful of in-place whole-vector
operations into one preallocated scratch array.
"""

from __future__ import annotations

import math

import numpy as np

from ..config import TrainConfig


class Optimizer:
    slots: tuple[str, ...] = ()

    def __init__(self, params: np.ndarray, cfg: TrainConfig):
        self.params, self.cfg = params, cfg
        self.state = {s: np.zeros_like(params) for s in slot_names(cfg)}
        self.t = 0
        self._tmp = np.empty_like(params)

    def step(self, grad: np.ndarray, lr: float) -> None:
        self.t += 1
        self.params -= self._update(grad, lr)

    def _update(self, grad, lr) -> np.ndarray:
        """Update the slots; return the step (the scratch array), which ``step`` subtracts."""
        raise NotImplementedError

    def _divide_by_rms(self, g, sq, lr):
        """lr g / (sqrt(sq) + eps), in the scratch array."""
        s = self._tmp
        np.sqrt(sq, out=s)
        s += self.cfg.eps
        np.divide(g, s, out=s)
        s *= lr
        return s


class SGD(Optimizer):
    """buf = momentum buf + g;  p -= lr buf (plain SGD when momentum is 0)."""

    slots = ("momentum",)

    def _update(self, g, lr):
        buf = self.state["momentum"]
        buf *= self.cfg.momentum
        buf += g
        return np.multiply(buf, lr, out=self._tmp)


class Adam(Optimizer):
    """m, v moving averages of g and g^2;  p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps).
    With train.weight_decay first p -= lr weight_decay p, decoupled from the gradient's
    moments (AdamW, Loshchilov and Hutter 2019; PyTorch's AdamW)."""

    slots = ("m", "v")

    def _update(self, g, lr):
        c, m, v, s = self.cfg, self.state["m"], self.state["v"], self._tmp
        if c.weight_decay:
            self.params *= 1.0 - lr * c.weight_decay
        m *= c.beta1
        np.multiply(g, 1.0 - c.beta1, out=s)
        m += s
        v *= c.beta2
        np.multiply(g, g, out=s)
        s *= 1.0 - c.beta2
        v += s
        bc1, bc2 = 1.0 - c.beta1**self.t, 1.0 - c.beta2**self.t
        np.sqrt(v, out=s)
        s *= 1.0 / math.sqrt(bc2)
        s += c.eps
        np.divide(m, s, out=s)
        s *= lr / bc1
        return s


class Adagrad(Optimizer):
    """sum += g^2;  p -= lr g / (sqrt(sum) + eps)  (min-char-rnn's rule)."""

    slots = ("sum",)

    def _update(self, g, lr):
        acc, s = self.state["sum"], self._tmp
        np.multiply(g, g, out=s)
        acc += s
        return self._divide_by_rms(g, acc, lr)


class RMSprop(Optimizer):
    """v = alpha v + (1 - alpha) g^2;  p -= lr g / (sqrt(v) + eps)."""

    slots = ("v",)

    def _update(self, g, lr):
        v, s, a = self.state["v"], self._tmp, self.cfg.alpha
        v *= a
        np.multiply(g, g, out=s)
        s *= 1.0 - a
        v += s
        return self._divide_by_rms(g, v, lr)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adagrad": Adagrad, "rmsprop": RMSprop}


def slot_names(cfg: TrainConfig) -> tuple[str, ...]:
    """The flat arrays an optimizer keeps beside the weights."""
    return OPTIMIZERS[cfg.optimizer].slots


def make_optimizer(params: np.ndarray, cfg: TrainConfig) -> Optimizer:
    return OPTIMIZERS[cfg.optimizer](params, cfg)


def clip_grad_norm(grad: np.ndarray, max_norm: float) -> float:
    """Scale ``grad`` in place so its global L2 norm is at most ``max_norm`` (0: no clipping).
    Returns the norm before clipping (non-finite when the gradient is)."""
    norm = math.sqrt(float(np.dot(grad, grad)))
    if max_norm > 0 and math.isfinite(norm) and norm > max_norm:
        grad *= max_norm / (norm + 1e-6)  # PyTorch's clip_grad_norm_ coefficient
    return norm
