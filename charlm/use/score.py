"""Probability of text under a model: a corpus split (validation loss) or a list of texts.

Shape letters: T time, B batch (texts or streams), V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import CharlmError, VocabError
from ..network.model import exp_shifted
from ..predict.adapt import Adaptive
from ..predict.predictor import Predictor
from ..text.batches import eval_streams, eval_windows
from ..text.vocab import Vocab, describe_chars

LN2 = math.log(2.0)
TINY = np.finfo(np.float64).tiny  # a probability that underflowed: ~1022 bits, not infinity
MAX_NATS = -math.log(TINY)  # a character's score at most: the same floor for nll's log-probabilities


def char_nats(model: Predictor, ids: np.ndarray, batch_size: int, seq_length: int, streams: slice = slice(None)) -> np.ndarray:
    """-ln p of ids[1 .. M] (M,) float64, each given the characters before it in its stream:
    (nearly) all of ``ids``, in up to ``batch_size`` streams, one window at a time. With
    ``streams``, only those streams' characters (a data-parallel rank's share), in order."""
    stream_len = (len(ids) - 1) // eval_streams(len(ids), batch_size, seq_length) if len(ids) >= 2 else 0
    nats, at, state = np.empty((0, 0)), 0, None
    with model.inference():
        for x, y, first in eval_windows(ids, batch_size, seq_length, streams):
            if first:
                state = model.zero_state(x.shape[1])
                nats, at = np.empty((x.shape[1], stream_len)), 0  # (B', stream length)
            nll, state = model.nll(x, y, state)
            nats[:, at : at + len(nll)] = nll.T
            at += len(nll)
    return nats.reshape(-1)


def evaluate(model: Predictor, ids: np.ndarray, batch_size: int, seq_length: int) -> float:
    """Mean nats per character over (nearly) all of ``ids`` (``char_nats``)."""
    nats = char_nats(model, ids, batch_size, seq_length)
    return float(nats.mean()) if len(nats) else float("nan")


@dataclass
class Score:
    text: str
    chars: int
    log_prob_nats: float
    skipped: int = 0

    @property
    def log_prob_bits(self) -> float:
        return self.log_prob_nats / LN2

    # A text with nothing left to score (every character skipped as unknown) has no rate: None,
    # which JSON writes as null (never NaN, which is not JSON).
    @property
    def bits_per_char(self) -> float | None:
        return -self.log_prob_bits / self.chars if self.chars else None

    @property
    def perplexity(self) -> float | None:
        return math.exp(-self.log_prob_nats / self.chars) if self.chars else None

    def to_dict(self) -> dict:
        return {"text": self.text, "chars": self.chars, "log_prob_nats": self.log_prob_nats,
                "log_prob_bits": self.log_prob_bits, "bits_per_char": self.bits_per_char,
                "perplexity": self.perplexity, "skipped": self.skipped}


def score_texts(model: Predictor, vocab: Vocab, texts: list[str], context: str = "\n", unknown: str = "error",
                batch_size: int = 64, window: int = 256) -> list[Score]:
    """Score each text on its own: every character given the context and all before it.

    Texts are batched by length (B at a time, padded, masked) and run in windows of ``window``
    steps, so 1,000 lines cost a few dozen batched forward passes. An ``Adaptive`` model reads
    them one at a time in the order given, in its segments, and carries what it learns from
    one text to the next. ``unknown``: 'error' raises ``VocabError`` naming unknown
    characters; 'skip' leaves them out and counts them.
    """
    if not context:
        raise CharlmError("the context must have at least one character (the first character is predicted from it)")
    ctx = vocab.encode(context, what="context")
    encoded, skipped = [], []
    for i, text in enumerate(texts):
        if not text:
            raise CharlmError(f"text {i + 1} is empty; there is nothing to score")
        kept = known(text, vocab, unknown, f"text {i + 1}" if len(texts) > 1 else "text")
        encoded.append(vocab.encode(kept))
        skipped.append(len(text) - len(kept))
    logp = np.zeros(len(texts))
    order = np.argsort([len(e) for e in encoded], kind="stable")
    if isinstance(model, Adaptive):
        order, batch_size, window = np.arange(len(texts)), 1, model.options.segment
    with model.inference():
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            logp[idx] = _score_batch(model, ctx, [encoded[i] for i in idx], window)
    return [Score(text=t, chars=len(e), log_prob_nats=float(lp), skipped=k)
            for t, e, lp, k in zip(texts, encoded, logp, skipped)]


def _score_batch(model: Predictor, ctx: np.ndarray, seqs: list[np.ndarray], window: int) -> np.ndarray:
    """Sum of log p over each sequence of the batch, given ``ctx``: (B,) float64."""
    B, C = len(seqs), len(ctx)
    full_len = C + max(len(q) for q in seqs)
    full = np.zeros((full_len, B), dtype=np.int64)  # (T, B), padded with id 0
    mask = np.zeros((full_len - 1, B), dtype=bool)  # which targets count
    full[:C] = ctx[:, None]
    for b, q in enumerate(seqs):
        full[C : C + len(q), b] = q
        mask[C - 1 : C - 1 + len(q), b] = True
    total = np.zeros(B)
    state = model.zero_state(B)
    for t0 in range(0, full_len - 1, window):
        t1 = min(full_len - 1, t0 + window)
        nll, state = model.nll(full[t0:t1], full[t0 + 1 : t1 + 1], state)
        total -= np.where(mask[t0:t1], np.minimum(nll, MAX_NATS), 0.0).sum(axis=0)
    return total


@dataclass
class CharScore:
    """One character of a text under the model: how surprising it was and what was expected."""

    index: int
    char: str
    bits: float  # -log2 p(char | everything before it)
    rank: int  # 1 when the model's most likely character was this one
    top: list[tuple[str, float]]  # the k most likely characters and their probabilities

    def to_dict(self) -> dict:
        return {"index": self.index, "char": self.char, "bits": self.bits, "rank": self.rank,
                "top": [{"char": c, "p": p} for c, p in self.top]}


def known(text: str, vocab: Vocab, unknown: str = "error", where: str = "text") -> str:
    """``text`` as it is scored: characters the vocabulary lacks are a ``VocabError`` naming
    them (``unknown`` 'error'), or left out ('skip')."""
    missing = vocab.unknown(text)
    if not missing:
        return text
    if unknown != "skip":
        raise VocabError(f"{where} has character(s) not in the model's vocabulary: {describe_chars(missing)}; "
                         "{unknown} leaves them out", unknown="skip")
    gone = set(missing)
    return "".join(c for c in text if c not in gone)


def explain(model: Predictor, vocab: Vocab, text: str, context: str = "\n", top_k: int = 3,
            window: int = 256, unknown: str = "error", where: str = "text") -> list[CharScore]:
    """Every character of ``text`` with its surprisal in bits, the rank of the true character
    and the ``top_k`` most likely ones, each given the context and all characters before it.
    ``unknown`` as for ``score_texts`` (there is no probability to show for an unknown
    character): with 'skip' the indices are those of the characters kept. An ``Adaptive`` model
    learns from each of its segments once it has scored it."""
    if not context or not text:
        raise CharlmError("explain needs a non-empty context and text")
    text = known(text, vocab, unknown, where)
    if not text:
        raise CharlmError(f"{where} has nothing left to explain: every character is outside the vocabulary")
    ids = np.concatenate([vocab.encode(context, what="context"), vocab.encode(text)]).astype(np.int64)
    C, out = len(context), []
    adaptive = isinstance(model, Adaptive)
    if adaptive:
        window = model.options.segment
    with model.inference():
        state = model.zero_state(1)
        if C > 1:
            _, state = model.forward(ids[: C - 1, None], state)
        for t0 in range(C - 1, len(ids) - 1, window):  # position t predicts ids[t + 1]
            t1 = min(len(ids) - 1, t0 + window)
            logits, after = model.forward(ids[t0:t1, None], state)
            p = logits.astype(np.float64)
            _, s = exp_shifted(p)
            p /= s  # (V, t1 - t0) probabilities
            for j in range(t1 - t0):
                col, true = p[:, j], ids[t0 + j + 1]
                order = np.argsort(-col, kind="stable")
                out.append(CharScore(len(out), vocab.chars[true], float(-np.log2(max(col[true], TINY))),
                                     int(np.flatnonzero(order == true)[0]) + 1,
                                     [(vocab.chars[k], float(col[k])) for k in order[:top_k]]))
            if adaptive:
                model.learn(ids[t0:t1, None], ids[t0 + 1 : t1 + 1, None], state)
            state = after
    return out
