"""Dynamic evaluation (Krause et al. 2017, "Dynamic Evaluation of Neural Sequence Models"): the
model keeps learning from the text it scores.

The text is read in order, in one stream, a segment of ``segment`` characters at a time. Each
segment is scored with the weights as they are, then the network takes one step on that
segment's loss, scaled per weight by the root mean square of that weight's gradients so far
(Krause et al.'s RMS rule, with the mean taken over the scored text instead of training data,
which a checkpoint does not carry), and is pulled back towards its trained weights:

    ms    <- mean of grad**2 over the segments so far
    theta <- theta - lr * grad / (sqrt(ms) + eps) + decay * (theta_trained - theta)

so a name or a turn of phrase seen a few lines ago becomes more probable, and what was learned
from text long past fades. Adaptation has diverged when a step takes the weights further from
the trained ones than the trained weights' own norm (each step of the RMS rule moves every
weight by about lr, so --adapt-lr 1 does at once), or when a loss, gradient, weight or score is
not finite (a relu RNN within a few segments): the network goes back to its trained weights and
its statistics to zero, a segment it was scoring is scored again with them, and ``resets``
counts it, so every score stays a number and the caller can say once what happened. Every character is scored before the model has learned from it. The
hidden state carries over from segment to segment as in plain scoring; the gradient stops at
segment boundaries (truncated BPTT, as in training). The weights on disk never change: the
network that adapts is the copy in memory. With a mixture, the network adapts and the n-gram
and the mixture's weight stay as trained.

Shape letters: T time (a segment), B batch (1: the text is one stream, in order).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from ..errors import NotFiniteError
from .mixture import Mixture

EPS = 1e-8


@dataclass(frozen=True)
class AdaptOptions:
    """The defaults were measured on tiny Shakespeare's validation split (docs/performance.md,
    "Dynamic evaluation"; ``python -m benchmarks.adapt``)."""

    segment: int = 20  # characters scored between two steps
    lr: float = 3e-4  # step size of the RMS-scaled update, per weight
    decay: float = 1e-3  # pull back towards the trained weights at each step (0: none)


class Adaptive:
    """``predictor`` (a ``Model`` or a ``Mixture``) with dynamic evaluation. It has the
    inference interface scoring uses: ``nll`` scores a window and then learns from it; after a
    ``forward`` (where the caller computes the scores), the caller calls ``learn``."""

    def __init__(self, predictor, options: AdaptOptions = AdaptOptions()):
        self.predictor, self.options = predictor, options
        self.net = predictor.net if isinstance(predictor, Mixture) else predictor
        self.trained = self.net.flat.copy()
        self._trained_norm2 = float(np.dot(self.trained, self.trained))
        self.ms = np.zeros_like(self.trained)  # mean squared gradient of each weight
        self._tmp = np.empty_like(self.trained)
        self.steps = 0
        self.resets = 0  # times a diverging step sent the network back to its trained weights
        self.V = predictor.V

    def inference(self):
        return nullcontext(self)  # the weights change from window to window: nothing can be prepared once

    def zero_state(self, B: int):
        return self.predictor.zero_state(B)

    def forward(self, x, state):
        """x (T, B) ids -> (logits (V, T*B), next state); the trained weights' when the
        adapted ones give a value that is not finite."""
        return self._with_trained_on_overflow(self.predictor.forward, x, state)

    def nll(self, x, y, state):
        """x, y (T, B) ids -> (nll (T, B) float64 nats, next state), then one step on them."""
        (nats, new_state), state = self._with_trained_on_overflow(self.predictor.nll, x, y, state, keep_state=True)
        self.learn(x, y, state)
        return nats, new_state

    def _with_trained_on_overflow(self, fn, *args, keep_state=False):
        """``fn(*args)`` (the last argument the state); when it overflows (``NotFiniteError``),
        again from the trained weights, with every stream whose state is not finite started
        afresh. An overflow of the trained weights themselves is the caller's to report."""
        *head, state = args
        try:
            out = fn(*head, state)
        except NotFiniteError:
            if self.steps == 0 and self._finite(state):
                raise  # nothing adapted, nothing to go back to
            state = self._reset(state)
            out = fn(*head, state)
        return (out, state) if keep_state else out

    @staticmethod
    def _finite(state) -> bool:
        return all(np.isfinite(a).all() for layer in state for a in layer if a.dtype.kind == "f")

    def learn(self, x, y, state) -> None:
        """One step on the window x -> y (T, B), read from ``state`` (the state it was scored from)."""
        o, net, ms, tmp = self.options, self.net, self.ms, self._tmp
        loss, _ = net.loss_and_grad(x, y, state[: len(net.layers)])  # no rng: no dropout
        g = net.grad
        if not math.isfinite(loss) or not math.isfinite(float(np.dot(g, g))):
            self._reset()
            return
        if o.decay:  # before the step, so the pull is from the weights the gradient was taken at
            np.subtract(self.trained, net.flat, out=tmp)
            tmp *= o.decay
            net.flat += tmp
        self.steps += 1
        np.multiply(g, g, out=tmp)  # ms += (g**2 - ms) / steps: the running mean
        tmp -= ms
        tmp *= 1.0 / self.steps
        ms += tmp
        np.sqrt(ms, out=tmp)
        tmp += EPS
        np.divide(g, tmp, out=tmp)
        tmp *= o.lr
        net.flat -= tmp
        np.subtract(net.flat, self.trained, out=tmp)
        drift = float(np.dot(tmp, tmp))
        if not drift <= self._trained_norm2:  # NaN compares false: non-finite weights are divergence too
            self._reset()

    def _reset(self, state=None):
        """Back to the trained weights, with no gradient statistics; ``state`` with every stream
        whose values are not finite started afresh (what the caller scores from next)."""
        self.resets += 1
        self.net.flat[...] = self.trained
        self.ms[...] = 0.0
        self.steps = 0
        if state is None:
            return None
        fresh = self.zero_state(state[0][0].shape[1])
        return [tuple(np.where(np.isfinite(a).all(axis=0, keepdims=True), a, z) if a.dtype.kind == "f" else a
                      for a, z in zip(layer, zero)) for layer, zero in zip(state, fresh)]
