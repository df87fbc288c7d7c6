"""A baseline that gives the numbers meaning: an interpolated Kneser-Ney character n-gram model
(Chen & Goodman 1998) and a unigram model, fitted on the training split and scored on the
validation split, in bits per character.

    P(w | h) = max(c(h w) - D, 0) / c(h) + D N1+(h .) / c(h) * P(w | h')

with h' the context one character shorter. The highest order counts occurrences; the lower
orders count continuations, N1+(. h w), the number of distinct characters seen before h w
(so a character that is frequent only after one context is not frequent on its own). D is
Ney's n1 / (n1 + 2 n2) per order, and the unigram level is interpolated with the uniform
distribution over the vocabulary, so no character has probability 0.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from .data import Corpus, split
from .errors import CharlmError


@dataclass
class _Order:
    counts: Counter  # n-gram -> count (occurrences at the top order, continuations below)
    totals: Counter  # context -> sum of its counts
    types: Counter  # context -> number of distinct next characters
    discount: float


def _order(counts: Counter) -> _Order:
    totals, types = Counter(), Counter()
    for g, c in counts.items():
        totals[g[:-1]] += c
        types[g[:-1]] += 1
    n1 = sum(1 for c in counts.values() if c == 1)
    n2 = sum(1 for c in counts.values() if c == 2)
    return _Order(counts, totals, types, n1 / (n1 + 2 * n2) if n1 + n2 else 0.5)


class KneserNey:
    """fit(text) counts n-grams up to ``order``; prob(w, h) is P(w | the last order-1 characters of h)."""

    def __init__(self, text: str, order: int = 5, vocab_size: int | None = None):
        self.n = order
        self.V = vocab_size or len(set(text))
        grams = [Counter(text[i : i + n] for i in range(len(text) - n + 1)) for n in range(1, order + 1)]
        counts = [None] * order
        counts[-1] = grams[-1]
        for n in range(order - 1, 0, -1):  # continuation counts from the order above
            cont = Counter()
            for g in grams[n]:
                cont[g[1:]] += 1
            counts[n - 1] = cont
        self.orders = [_order(c) for c in counts]  # orders[k]: n-grams of length k + 1

    def prob(self, w: str, h: str) -> float:
        p = 1.0 / self.V
        for k in range(self.n):  # unigram level first, then longer contexts interpolate on top
            ctx = h[len(h) - k :] if k else ""
            if len(ctx) < k:
                break
            o = self.orders[k]
            total = o.totals.get(ctx, 0)
            if total == 0:
                break  # an unseen context: the shorter one's estimate stands
            p = max(o.counts.get(ctx + w, 0) - o.discount, 0.0) / total + o.discount * o.types[ctx] / total * p
        return p

    def bits_per_char(self, text: str, history: str = "") -> float:
        """Mean -log2 P over ``text``, each character given the n-1 before it (``history`` first)."""
        full, start, total = history + text, len(history), 0.0
        for i in range(start, len(full)):
            total -= math.log2(self.prob(full[i], full[max(0, i - self.n + 1) : i]))
        return total / len(text)


def unigram_bits_per_char(train: str, val: str, vocab_size: int) -> float:
    """Character frequencies with add-one smoothing."""
    c, n = Counter(train), len(train)
    return -sum(math.log2((c[ch] + 1) / (n + vocab_size)) for ch in val) / len(val)


@dataclass
class Baseline:
    order: int
    kneser_ney_bpc: float
    unigram_bpc: float
    train_chars: int
    val_chars: int

    def to_dict(self) -> dict:
        return {"order": self.order, "kneser_ney_bits_per_char": self.kneser_ney_bpc,
                "unigram_bits_per_char": self.unigram_bpc, "train_chars": self.train_chars,
                "val_chars": self.val_chars}


def baseline(train: str, val: str, order: int = 5, vocab_size: int | None = None) -> Baseline:
    V = vocab_size or len(set(train) | set(val))
    kn = KneserNey(train, order, V)
    return Baseline(order, kn.bits_per_char(val, history=train[-(order - 1) :] if order > 1 else ""),
                    unigram_bits_per_char(train, val, V), len(train), len(val))


MAX_BASELINE_CHARS = 20_000_000  # ~35 s and a few GB of n-gram tables; beyond, training skips it


def corpus_baseline(corpus: Corpus, val_fraction: float, order: int = 5) -> Baseline:
    """The baseline on the same training and validation split the trainer uses."""
    if val_fraction <= 0:
        raise CharlmError("the baseline is scored on the validation split: val_fraction must be > 0")
    train_ids, val_ids = split(corpus.ids, val_fraction)
    if len(val_ids) == 0:
        raise CharlmError("the validation split is empty: the corpus is too short for a baseline")
    return baseline(corpus.vocab.decode(train_ids), corpus.vocab.decode(val_ids), order, len(corpus.vocab))
