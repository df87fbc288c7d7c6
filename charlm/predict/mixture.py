"""A network mixed with a Kneser-Ney n-gram model, for corpora too small for a network alone
(Mikolov et al. 2011 interpolated RNN and KN models the same way):

    p(c | h) = w p_net(c | h) + (1 - w) p_kn(c | the last n-1 characters of h)

The weight w is fitted on the validation split, text neither model was trained on: the
negative log-likelihood is convex in w, so bisection on its derivative finds the optimum.

``Mixture`` has the inference interface of ``Model`` (``inference``, ``zero_state``,
``forward``, ``nll``), with log-probabilities as its logits, so scoring, explaining, sampling
and beam search use it unchanged. Its state is the network's plus one more entry, the last
n-1 ids of each stream (n-1, B), -1 before the text starts.

Shape letters: T time, B batch, V vocabulary, M characters.
"""

from __future__ import annotations

import numpy as np

from ..network.model import Model, exp_shifted
from .ngram import KneserNey


def mix_nats(net_nats: np.ndarray, kn_nats: np.ndarray, w: float) -> np.ndarray:
    """-ln(w p_net + (1 - w) p_kn) from both models' -ln p, elementwise."""
    return -np.logaddexp(np.log(w) - net_nats if w > 0 else -np.inf,
                         np.log1p(-w) - kn_nats if w < 1 else -np.inf)


def fit_weight(net_nats: np.ndarray, kn_nats: np.ndarray, iters: int = 60) -> float:
    """The w in [0, 1] that minimises mean mix_nats over M characters (both (M,) -ln p)."""
    a, b = np.exp(-net_nats), np.exp(-kn_nats)
    d = a - b

    def slope(w):  # d/dw of the mean negative log-likelihood; increasing in w
        return -float(np.mean(d / (w * a + (1 - w) * b)))

    if slope(1.0) <= 0:
        return 1.0
    if slope(0.0) >= 0:
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if slope(mid) < 0 else (lo, mid)
    return 0.5 * (lo + hi)


def cross_fitted_nats(net_nats: np.ndarray, kn_nats: np.ndarray) -> tuple[float, float]:
    """(mean nats of the mixture, each half scored with the weight fitted on the other half;
    the weight fitted on all M characters). The first is what the mixture scores on text its
    weight never saw."""
    h = len(net_nats) // 2
    if h == 0:
        return float(net_nats.mean()), 1.0
    first, second = slice(0, h), slice(h, None)
    w1, w2 = fit_weight(net_nats[first], kn_nats[first]), fit_weight(net_nats[second], kn_nats[second])
    total = mix_nats(net_nats[second], kn_nats[second], w1).sum() + mix_nats(net_nats[first], kn_nats[first], w2).sum()
    return float(total / len(net_nats)), fit_weight(net_nats, kn_nats)


class Mixture:
    """``net`` (a Model) and ``ngram`` mixed with weight ``weight`` on the network."""

    def __init__(self, net: Model, ngram: KneserNey, weight: float):
        self.net, self.ngram, self.weight = net, ngram, float(weight)
        self.V = net.V

    def inference(self):
        return self.net.inference()

    def zero_state(self, B: int) -> list[tuple[np.ndarray, ...]]:
        return self.net.zero_state(B) + [(np.full((self.ngram.n - 1, B), -1, dtype=np.int64),)]

    def _histories(self, x: np.ndarray, state) -> tuple[np.ndarray, list]:
        """x (T, B) ids -> (histories (T*B, n-1) in the logits' column order t*B + b, the
        n-1 ids each stream ends with)."""
        k = self.ngram.n - 1
        T, B = x.shape
        seq = np.concatenate([state[-1][0], x.astype(np.int64)])  # (k + T, B)
        hist = np.lib.stride_tricks.sliding_window_view(seq[1:], k, axis=0) if k else np.zeros((T, B, 0), np.int64)
        return hist.reshape(T * B, k), (seq[T:].copy(),)

    def forward(self, x, state):
        """x (T, B) ids -> (log p (V, T*B) float64, as logits; next state)."""
        logits, net_state = self.net.forward(x, state[:-1])
        p = logits.astype(np.float64)
        _, s = exp_shifted(p)
        p /= s
        hist, tail = self._histories(x, state)
        p *= self.weight
        p += (1.0 - self.weight) * self.ngram.probs(hist)
        return np.log(p), net_state + [tail]

    def nll(self, x, y, state):
        """x, y (T, B) ids -> (nll (T, B) float64 nats, next state)."""
        net_nats, net_state = self.net.nll(x, y, state[:-1])
        hist, tail = self._histories(x, state)
        kn_nats = -np.log(self.ngram.probs(hist, y.reshape(-1))).reshape(y.shape)
        return mix_nats(net_nats, kn_nats, self.weight), net_state + [tail]
