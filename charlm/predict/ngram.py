"""An interpolated Kneser-Ney character n-gram model over token ids (Chen & Goodman 1998),
vectorised: the baseline a network has to beat, and the second half of a mixture with one.

    P(w | h) = max(c(h w) - D, 0) / c(h) + D N1+(h .) / c(h) * P(w | h')

with h' the context one character shorter. The highest order counts occurrences; the lower
orders count continuations, N1+(. h w), the number of distinct characters seen before h w
(so a character that is frequent only after one context is not frequent on its own). D is
Ney's n1 / (n1 + 2 n2) per order, and the unigram level is interpolated with the uniform
distribution over the vocabulary, so no character has probability 0. A context never seen in
training leaves the estimate of the shorter one standing.

Shape letters: N ids it is fitted on, M contexts asked about, V vocabulary, n the order.
An n-gram of ids is one int64 key, its ids as digits in base V (the last id least
significant), so counting is ``np.unique`` and look-up is ``np.searchsorted``.
tests/reference.py holds the same model written with Python dictionaries of strings.
"""

from __future__ import annotations

import numpy as np

from ..errors import CharlmError

ORDER = 5  # where no order is given: the baseline's, and the mixture the recipes add (training/recipes.py)
# The most characters an n-gram is fitted on: a mixture's (its text is stored in every checkpoint,
# and beyond this a network wins anyway) and a baseline's (beyond, it is fitted on the last
# MAX_CHARS of the training split and says so).
MAX_CHARS = 20_000_000
MAX_KEY = 2**62  # V ** order must stay below this for the keys to fit in int64
CHUNK = 1 << 16  # contexts scored at once


class _Order:
    """The n-grams of one length: sorted keys and their counts, and per context (the key
    without its last id) the sum of its counts and how many distinct ids follow it."""

    def __init__(self, keys: np.ndarray, counts: np.ndarray, V: int):
        self.keys, self.counts = keys, counts.astype(np.float64)
        ctx = keys // V
        self.ctx_keys, first, types = np.unique(ctx, return_index=True, return_counts=True)
        self.totals = np.add.reduceat(self.counts, first) if len(keys) else np.zeros(0)
        self.types = types.astype(np.float64)
        n1, n2 = int((counts == 1).sum()), int((counts == 2).sum())
        self.discount = n1 / (n1 + 2 * n2) if n1 + n2 else 0.5

    def count(self, keys: np.ndarray) -> np.ndarray:
        return _lookup(self.keys, self.counts, keys)


def _lookup(sorted_keys: np.ndarray, values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """values[i] where sorted_keys[i] == key, 0 where the key is absent; shape of ``keys``."""
    if len(sorted_keys) == 0:
        return np.zeros(keys.shape)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return np.where(sorted_keys[at] == keys, values[at], 0.0)


def _gram_keys(ids: np.ndarray, n: int, V: int) -> np.ndarray:
    """(N - n + 1,) keys of every n-gram of ``ids`` (N,), in order."""
    count = len(ids) - n + 1
    keys = np.zeros(max(count, 0), dtype=np.int64)
    for j in range(n):
        keys = keys * V + ids[j : j + count]
    return keys


class KneserNey:
    """Fitted on ids (N,) of a vocabulary of V; ``probs`` gives P(w | context) for many contexts."""

    def __init__(self, ids: np.ndarray, order: int = ORDER, vocab_size: int | None = None):
        ids = np.asarray(ids).astype(np.int64)
        V = int(vocab_size or (int(ids.max()) + 1 if len(ids) else 1))
        if order < 1:
            raise CharlmError(f"the n-gram order must be >= 1, got {order}")
        if V**order >= MAX_KEY:
            raise CharlmError(f"a {order}-gram model of {V:,} characters has too many possible n-grams to index; "
                              "use a lower order (model.ngram_order, or --order)")
        self.n, self.V = order, V
        levels = [np.unique(_gram_keys(ids, order, V), return_counts=True)]  # occurrences at the top
        for n in range(order - 1, 0, -1):  # below, continuations: distinct characters before each n-gram
            distinct = np.unique(_gram_keys(ids, n + 1, V))
            levels.append(np.unique(distinct % V**n, return_counts=True))
        self.orders = [_Order(k, c, V) for k, c in reversed(levels)]  # orders[k]: (k + 1)-grams

    def probs(self, history: np.ndarray, targets: np.ndarray | None = None) -> np.ndarray:
        """history (M, n-1) ids, the last column the most recent, -1 before a text's start ->
        P(targets[m] | history[m]) (M,) float64, or without targets every P(w | history[m]) (V, M)."""
        M = history.shape[0]
        V = self.V
        cand = np.arange(V, dtype=np.int64)[:, None] if targets is None else np.asarray(targets, np.int64)[None, :]
        p = np.full((cand.shape[0], M), 1.0 / V)
        ctx = np.zeros(M, dtype=np.int64)
        alive = np.ones(M, dtype=bool)  # still extending: the context so far was seen in training
        for k, o in enumerate(self.orders):  # the unigram level first, longer contexts on top
            if k:
                c = history[:, self.n - 1 - k]
                alive &= c >= 0
                ctx = ctx + np.maximum(c, 0) * V ** (k - 1)
            total = _lookup(o.ctx_keys, o.totals, ctx)
            alive &= total > 0
            if not alive.any():
                break
            rows = np.flatnonzero(alive)
            t, types = total[rows], _lookup(o.ctx_keys, o.types, ctx[rows])
            hit = o.count(ctx[rows] * V + cand[:, rows] if targets is not None else ctx[rows][None, :] * V + cand)
            p[:, rows] = np.maximum(hit - o.discount, 0.0) / t + (o.discount * types / t) * p[:, rows]
        return p[0] if targets is not None else p

    def histories(self, ids: np.ndarray, before: np.ndarray | None = None) -> np.ndarray:
        """ids (N,) -> (N, n-1): the n-1 ids before each position, from ``before`` (the text
        preceding ``ids``) and then ``ids`` itself, -1 where there is nothing."""
        k = self.n - 1
        before = np.zeros(0, np.int64) if before is None else np.asarray(before, np.int64)[len(before) - k :]
        padded = np.concatenate([np.full(k - len(before), -1, np.int64), before, np.asarray(ids, np.int64)])
        return np.lib.stride_tricks.sliding_window_view(padded, k)[: len(ids)] if k else np.zeros((len(ids), 0), np.int64)

    def nats(self, ids: np.ndarray, before: np.ndarray | None = None) -> np.ndarray:
        """-ln P of each of ids (N,) given the ones before it (and ``before``): (N,) float64."""
        hist, out = self.histories(ids, before), np.empty(len(ids))
        for s in range(0, len(ids), CHUNK):  # bounded temporaries for long texts
            out[s : s + CHUNK] = -np.log(self.probs(hist[s : s + CHUNK], ids[s : s + CHUNK]))
        return out
