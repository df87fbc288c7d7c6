"""A baseline that gives the numbers meaning: the interpolated Kneser-Ney character n-gram
model of ``ngram.py`` and a unigram model, fitted on the training split and scored on the
validation split, in bits per character.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import CharlmError
from ..text.batches import eval_sample
from ..text.corpus import Corpus, split
from .ngram import MAX_CHARS, ORDER, KneserNey


def unigram_bits_per_char(train: np.ndarray, val: np.ndarray, vocab_size: int) -> float:
    """Character frequencies with add-one smoothing; train, val (N,) ids."""
    from ..text.audit import count_ids

    c = count_ids(train, vocab_size)
    return float(-np.log2((c[val] + 1) / (len(train) + vocab_size)).mean())


@dataclass
class Baseline:
    order: int
    kneser_ney_bpc: float
    unigram_bpc: float
    train_chars: int
    val_chars: int
    sampled: bool = False  # fitted and scored on bounded samples of a large corpus's splits

    def to_dict(self) -> dict:
        return {"order": self.order, "kneser_ney_bits_per_char": self.kneser_ney_bpc,
                "unigram_bits_per_char": self.unigram_bpc, "train_chars": self.train_chars,
                "val_chars": self.val_chars, "sampled": self.sampled}

    def describe_data(self) -> str:
        """'fitted on N training characters, scored on M validation characters', saying when
        those are samples."""
        a, b = ("the last ", " (a sample)") if self.sampled else ("", "")
        return (f"fitted on {a}{self.train_chars:,} training characters{b}, scored on {self.val_chars:,} "
                f"validation characters{' (evenly spaced stretches)' if self.sampled else ''}")


def baseline(train: np.ndarray, val: np.ndarray, order: int = ORDER, vocab_size: int | None = None) -> Baseline:
    """train, val (N,) ids; each validation character is predicted from the ones before it,
    the end of the training split first."""
    train, val = np.asarray(train, np.int64), np.asarray(val, np.int64)
    V = vocab_size or int(max(train.max(), val.max())) + 1
    kn = KneserNey(train, order, V)
    return Baseline(order, float(kn.nats(val, before=train).mean() / math.log(2)),
                    unigram_bits_per_char(train, val, V), len(train), len(val))


# Beyond these the n-gram is fitted on the last ngram.MAX_CHARS of the training split and scored
# on MAX_BASELINE_VAL_CHARS of the validation split (a bounded time and a few GB of n-gram tables
# at the most, whatever the corpus's size), and says so.
MAX_BASELINE_VAL_CHARS = 2_000_000


def corpus_baseline(corpus: Corpus, val_fraction: float, order: int = ORDER) -> Baseline:
    """The baseline on the same training and validation split the trainer uses (bounded
    samples of them for a large corpus)."""
    if val_fraction <= 0:
        raise CharlmError("the baseline is scored on the validation split: val_fraction must be > 0")
    train_ids, val_ids = split(corpus.ids, val_fraction)
    if len(val_ids) == 0:
        raise CharlmError("the validation split is empty: the corpus is too short for a baseline")
    sampled = len(train_ids) > MAX_CHARS or len(val_ids) > MAX_BASELINE_VAL_CHARS
    b = baseline(train_ids[-MAX_CHARS:], eval_sample(val_ids, MAX_BASELINE_VAL_CHARS, 50), order,
                 len(corpus.vocab))
    b.sampled = sampled
    return b
