"""Generating text: sampling (temperature, top-k, nucleus), several samples as one batch,
best-of-N, beam search, stop strings.

Shape letters: N samples (the batch), V vocabulary. Every sample is scored as it is made: its
log-probability is the sum of log p(next character) under the model itself (temperature 1,
no truncation), so bits per character compare samples and models fairly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .errors import CharlmError
from .model import Model
from .score import LN2, score_texts
from .vocab import Vocab

MAX_LENGTH = 1_000_000  # characters per sample: about ten minutes for a 2x256 LSTM on 2 cores
MAX_BATCH = 10_000  # samples (or beams) generated together


@dataclass
class Sample:
    prime: str
    text: str  # the generated continuation, without the prime (and without the stop string)
    log_prob_nats: float
    stopped: bool = False  # ended at the stop string rather than at the length

    @property
    def chars(self) -> int:
        return len(self.text)

    @property
    def bits_per_char(self) -> float | None:
        return -self.log_prob_nats / LN2 / self.chars if self.chars else None

    def to_dict(self) -> dict:
        return {"prime": self.prime, "text": self.text, "chars": self.chars, "log_prob_nats": self.log_prob_nats,
                "log_prob_bits": self.log_prob_nats / LN2, "bits_per_char": self.bits_per_char,
                "stopped": self.stopped}


def check_sampling(length: int, temperature: float, top_k: int | None, top_p: float | None, n: int = 1) -> None:
    """``CharlmError`` naming the parameter, its value and the allowed range."""
    if not 0 <= length <= MAX_LENGTH:
        raise CharlmError(f"length must be between 0 and {MAX_LENGTH:,}, got {length}")
    if not (math.isfinite(temperature) and 0 < temperature <= 100):
        raise CharlmError(f"temperature must be > 0 and <= 100, got {temperature}")
    if top_k is not None and top_k < 1:
        raise CharlmError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not (0 < top_p <= 1):
        raise CharlmError(f"top_p must be > 0 and <= 1, got {top_p}")
    if not 1 <= n <= MAX_BATCH:
        raise CharlmError(f"the number of samples must be between 1 and {MAX_BATCH:,}, got {n}")


def log_softmax(z: np.ndarray) -> np.ndarray:
    """z (V, N) -> log softmax over V, float64, with max subtraction so exp never overflows."""
    z = z.astype(np.float64) - z.max(axis=0)
    return z - np.log(np.exp(z).sum(axis=0))


def _draw_weights(z: np.ndarray, temperature: float, top_k: int | None, top_p: float | None) -> np.ndarray:
    """z (V, N) logits with each column's max at 0 -> unnormalised probabilities to draw from."""
    V = z.shape[0]
    if temperature != 1.0:
        z = z / temperature  # z <= 0 stays <= 0: no overflow at any temperature
    if top_k is not None and top_k < V:
        z = z.copy()
        drop = np.argpartition(z, V - top_k, axis=0)[: V - top_k]  # (V-k, N): the least likely
        np.put_along_axis(z, drop, -np.inf, axis=0)
    p = np.exp(z)
    if top_p is not None and top_p < 1:
        # Nucleus: the smallest set of most likely characters whose probability reaches top_p.
        order = np.argsort(-p, axis=0)
        ps = np.take_along_axis(p, order, axis=0)
        cum = np.cumsum(ps, axis=0) / ps.sum(axis=0)
        keep_sorted = (cum - ps / ps.sum(axis=0)) < top_p  # mass before this one is below top_p
        keep = np.empty_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=0)
        p[~keep] = 0.0
    return p


class _Run:
    """N streams through the model, one character per step."""

    def __init__(self, model: Model, vocab: Vocab, prime: str, n: int):
        if not prime:
            raise CharlmError("the prime text must have at least one character (the first character is drawn given it)")
        ids = vocab.encode(prime, what="prime text").astype(np.int64)
        self.model, self.vocab, self.n = model, vocab, n
        state = model.zero_state(1)
        if len(ids) > 1:
            _, state = model.forward(ids[:-1, None], state)
        self.state = [tuple(np.repeat(s, n, axis=1) for s in layer) for layer in state]
        self.x = np.full((1, n), ids[-1], dtype=np.int64)

    def logits(self) -> np.ndarray:
        """(V, N) float64 logits of the next character of each stream, each column's max 0."""
        logits, self.state = self.model.forward(self.x, self.state)
        z = logits.astype(np.float64)
        z -= z.max(axis=0)
        return z

    def feed(self, ids: np.ndarray, keep: np.ndarray | None = None) -> None:
        """Next inputs (N,); ``keep`` (N,) reorders the streams first (beam search)."""
        if keep is not None:
            self.state = [tuple(s[:, keep] for s in layer) for layer in self.state]
        self.x[0] = ids


def generate(model: Model, vocab: Vocab, prime: str = "\n", length: int = 1000, n: int = 1,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None, greedy: bool = False,
             seed: int | None = None, stop: str | None = None,
             on_text: Callable[[str], None] | None = None) -> list[Sample]:
    """``n`` samples of up to ``length`` characters after ``prime``, generated as one batch.

    temperature divides the logits; top_k keeps the k most likely characters; top_p keeps the
    smallest set whose probability reaches top_p; greedy takes the most likely every step.
    A sample ends early at ``stop`` (which is left out of its text). ``on_text`` receives the
    first sample's text piece by piece as soon as it is final (for streaming). Same seed, same text.
    """
    check_sampling(length, temperature, top_k, top_p, n)
    if stop == "":
        raise CharlmError("the stop string must have at least one character")
    rng = np.random.default_rng(seed)
    texts, logps = [[] for _ in range(n)], np.zeros(n)
    done = np.zeros(n, dtype=bool)
    stopped = np.zeros(n, dtype=bool)
    hold = len(stop) - 1 if stop else 0  # characters that might still turn out to start the stop string
    sent, cols, chars = 0, np.arange(n), vocab.chars
    with model.inference():
        run = _Run(model, vocab, prime, n)
        for _ in range(length):
            z = run.logits()
            e = np.exp(z)
            lse = np.log(e.sum(axis=0))
            if greedy:
                nxt = np.argmax(z, axis=0)
            else:
                plain = temperature == 1.0 and top_k is None and top_p is None
                p = e if plain else _draw_weights(z, temperature, top_k, top_p)
                cdf = np.cumsum(p, axis=0)  # inverse-CDF draw: one uniform per sample
                u = rng.random(n) * cdf[-1]
                nxt = np.minimum((cdf <= u[None, :]).sum(axis=0), len(vocab) - 1)
            gained = z[nxt, cols] - lse
            if stop is None:  # no sample ends early: every stream takes its character
                logps += gained
                for b, c in enumerate(nxt.tolist()):
                    texts[b].append(chars[c])
            else:
                logps += np.where(done, 0.0, gained)
                for b in np.flatnonzero(~done):
                    texts[b].append(chars[nxt[b]])
                    if texts[b][-1] == stop[-1] and "".join(texts[b][-len(stop):]) == stop:
                        done[b] = stopped[b] = True
            if on_text is not None and len(texts[0]) - hold > sent and not stopped[0]:
                on_text("".join(texts[0][sent : len(texts[0]) - hold]))
                sent = len(texts[0]) - hold
            if stop is not None and done.all():
                break
            run.feed(nxt)
    samples = []
    for b in range(n):
        text = "".join(texts[b])
        if stopped[b]:
            # the stop string's own characters are not part of the sample, nor of its probability
            text = text[: -len(stop)]
            logps[b] = _logp_of(model, vocab, prime, text) if text else 0.0
        samples.append(Sample(prime, text, float(logps[b]), bool(stopped[b])))
    if on_text is not None and len(samples[0].text) > sent:
        on_text(samples[0].text[sent:])
    return samples


def _logp_of(model: Model, vocab: Vocab, prime: str, text: str) -> float:
    return score_texts(model, vocab, [text], context=prime)[0].log_prob_nats


def keep_best(samples: list[Sample], group: int) -> list[Sample]:
    """The most likely sample (lowest bits per character) of each run of ``group`` samples."""
    def key(s):
        return s.bits_per_char if s.bits_per_char is not None else math.inf

    return [min(samples[i : i + group], key=key) for i in range(0, len(samples), group)]


def beam_search(model: Model, vocab: Vocab, prime: str = "\n", length: int = 1000, width: int = 5,
                stop: str | None = None) -> Sample:
    """The most likely continuation that beam search of ``width`` finds: at each step every
    beam is extended by every character and the ``width`` most probable sequences are kept.
    Beams that reach ``stop`` are set aside; the result is the best by bits per character."""
    check_sampling(length, 1.0, None, None, width)
    score = np.full(width, -np.inf)
    score[0] = 0.0  # all beams start as the same sequence: expand only one
    seqs: list[list[int]] = [[] for _ in range(width)]
    finished: list[Sample] = []
    with model.inference():
        run = _Run(model, vocab, prime, width)
        for _ in range(length):
            cand = score[None, :] + log_softmax(run.logits())  # (V, W)
            flat = cand.reshape(-1)
            top = np.argpartition(-flat, width - 1)[:width] if flat.size > width else np.arange(flat.size)
            top = top[np.argsort(-flat[top], kind="stable")]
            v, w = np.divmod(top, width)
            score = flat[top]
            seqs = [seqs[b] + [int(c)] for b, c in zip(w, v)]
            if stop:
                for j, s in enumerate(seqs):
                    text = vocab.decode(s)
                    if np.isfinite(score[j]) and text.endswith(stop):
                        kept = text[: -len(stop)]
                        finished.append(Sample(prime, kept, _logp_of(model, vocab, prime, kept) if kept else 0.0, True))
                        score[j] = -np.inf  # set aside: no longer extended
                if not np.isfinite(score).any():
                    break
            run.feed(v, keep=w)
    live = [Sample(prime, vocab.decode(s), float(sc)) for s, sc in zip(seqs, score) if np.isfinite(sc)]
    pool = finished + live
    if not pool:
        return Sample(prime, "", 0.0)
    return min(pool, key=lambda s: s.bits_per_char if s.bits_per_char is not None else math.inf)


def sample(model: Model, vocab: Vocab, length: int = 1000, prime: str = "\n", temperature: float = 1.0,
           top_k: int | None = None, greedy: bool = False, seed: int | None = None,
           top_p: float | None = None) -> Iterator[str]:
    """One sample, character by character (the first sample of ``generate``)."""
    pieces: list[str] = []
    generate(model, vocab, prime, length, 1, temperature, top_k, top_p, greedy, seed, on_text=pieces.append)
    for piece in pieces:
        yield from piece
