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

from ..config import MAX_TEMPERATURE
from ..errors import CharlmError
from ..network.model import exp_shifted
from ..predict.predictor import Predictor
from ..text.vocab import Vocab
from .score import LN2

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
    if not (math.isfinite(temperature) and 0 < temperature <= MAX_TEMPERATURE):
        raise CharlmError(f"temperature must be > 0 and <= {MAX_TEMPERATURE:g}, got {temperature}")
    if top_k is not None and top_k < 1:
        raise CharlmError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not (0 < top_p <= 1):
        raise CharlmError(f"top_p must be > 0 and <= 1, got {top_p}")
    if not 1 <= n <= MAX_BATCH:
        raise CharlmError(f"the number of samples must be between 1 and {MAX_BATCH:,}, got {n}")


def draw_weights(e: np.ndarray, temperature, top_k, top_p) -> np.ndarray:
    """e (V, N) unnormalised probabilities, each column's max 1 -> the weights to draw from.

    Each setting is one value for every column, or an (N,) array of one per column (the
    server's streams each have their own): temperature > 0; top_k None or 0 for all V; top_p
    None or 1 for no nucleus."""
    if np.ndim(temperature) or np.ndim(top_k) or np.ndim(top_p):
        return _draw_weights_per_column(e, temperature, top_k, top_p)
    V = e.shape[0]
    # exp(z / T) = e ** (1 / T); e <= 1 stays <= 1, so no overflow at any temperature
    p = e ** (1.0 / temperature) if temperature != 1.0 else e.copy()
    if top_k and top_k < V:
        drop = np.argpartition(p, V - top_k, axis=0)[: V - top_k]  # (V-k, N): the least likely
        np.put_along_axis(p, drop, 0.0, axis=0)
    if top_p is not None and top_p < 1:
        # Nucleus: the smallest set of most likely characters whose probability reaches top_p.
        p[~_nucleus(p, top_p)] = 0.0
    return p


def _nucleus(p: np.ndarray, top_p) -> np.ndarray:
    """(V, N) bool: each column's nucleus, the most likely characters until the probability
    before one reaches top_p (a number, or a (1, N) row of them)."""
    order = np.argsort(-p, axis=0)
    ps = np.take_along_axis(p, order, axis=0)
    cum = np.cumsum(ps, axis=0) / ps.sum(axis=0)
    keep_sorted = (cum - ps / ps.sum(axis=0)) < top_p  # mass before this one is below top_p
    keep = np.empty_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=0)
    return keep


def _draw_weights_per_column(e, temperature, top_k, top_p) -> np.ndarray:
    V, N = e.shape
    t = np.broadcast_to(np.asarray(temperature, np.float64), (N,))
    p = e ** (1.0 / t)[None, :]
    k = np.broadcast_to(np.asarray(0 if top_k is None else top_k), (N,))
    if ((k > 0) & (k < V)).any():
        rank = np.empty((V, N), np.int64)
        np.put_along_axis(rank, np.argsort(-p, axis=0, kind="stable"), np.arange(V)[:, None], axis=0)
        p[rank >= np.where(k > 0, k, V)[None, :]] = 0.0
    q = np.broadcast_to(np.asarray(1.0 if top_p is None else top_p, np.float64), (N,))
    if (q < 1).any():
        p[~_nucleus(p, q[None, :])] = 0.0
    return p


def draw(p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draws from weights p (V, N), one uniform in [0, 1) per column u (N,) -> (N,) ids."""
    cdf = np.cumsum(p, axis=0)
    return np.minimum((cdf <= (u * cdf[-1])[None, :]).sum(axis=0), p.shape[0] - 1)


def encode_prime(vocab: Vocab, prime: str) -> np.ndarray:
    """prime -> (P,) int64 ids; ``CharlmError`` for an empty prime or unknown characters."""
    if not prime:
        raise CharlmError("the prime text must have at least one character (the first character is drawn given it)")
    return vocab.encode(prime, what="prime text").astype(np.int64)


class _Run:
    """N streams through the model, one character per step."""

    def __init__(self, model: Predictor, vocab: Vocab, prime: str, n: int):
        ids = encode_prime(vocab, prime)
        self.model, self.vocab, self.n = model, vocab, n
        state = model.zero_state(1)
        if len(ids) > 1:
            _, state = model.forward(ids[:-1, None], state)
        self.state = [tuple(np.repeat(s, n, axis=1) for s in layer) for layer in state]
        self.x = np.full((1, n), ids[-1], dtype=np.int64)

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        """The next character's distribution in each stream: e (V, N) float64, exp of the
        logits shifted so each column's max is 1, and lse (N,) = log sum e; p = e / sum e."""
        logits, self.state = self.model.forward(self.x, self.state)
        e = logits.astype(np.float64)
        _, s = exp_shifted(e)
        return e, np.log(s)

    def feed(self, ids: np.ndarray, keep: np.ndarray | None = None) -> None:
        """Next inputs (N,); ``keep`` (N,) reorders the streams first (beam search)."""
        if keep is not None:
            self.state = [tuple(s[:, keep] for s in layer) for layer in self.state]
        self.x[0] = ids


def generate(model: Predictor, vocab: Vocab, prime: str = "\n", length: int = 1000, *, n: int = 1,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None, greedy: bool = False,
             seed: int | None = None, stop: str | None = None,
             on_text: Callable[[str], None] | None = None) -> list[Sample]:
    """``n`` samples of up to ``length`` characters after ``prime``, generated as one batch.

    temperature divides the logits; top_k keeps the k most likely characters; top_p keeps the
    smallest set whose probability reaches top_p; greedy takes the most likely every step.
    A sample ends early at ``stop`` (which is left out of its text and of its probability).
    ``on_text`` receives the first sample's text piece by piece as soon as it is final (for
    streaming). Same seed, same text.
    """
    stream = _generation(model, vocab, prime, length, n, temperature, top_k, top_p, greedy, seed, stop)
    while True:
        try:
            piece = next(stream)
        except StopIteration as done:
            return done.value
        if on_text is not None:
            on_text(piece)


def _generation(model, vocab, prime, length, n, temperature, top_k, top_p, greedy, seed, stop):
    """``generate`` as a generator: yields the first sample's text piece by piece as soon as it
    is final, and returns the list of samples."""
    check_sampling(length, temperature, top_k, top_p, n)
    if stop == "":
        raise CharlmError("the stop string must have at least one character")
    rng = np.random.default_rng(seed)
    texts = [[] for _ in range(n)]
    gains = [[] for _ in range(n)]  # log p of each character taken, per sample
    done = np.zeros(n, dtype=bool)
    hold = len(stop) - 1 if stop else 0  # characters that might still turn out to start the stop string
    sent, cols, chars = 0, np.arange(n), vocab.chars
    plain = temperature == 1.0 and top_k is None and top_p is None
    with model.inference():
        run = _Run(model, vocab, prime, n)
        for _ in range(length):
            e, lse = run.next()
            if greedy:
                nxt = np.argmax(e, axis=0)
            else:
                nxt = draw(e if plain else draw_weights(e, temperature, top_k, top_p), rng.random(n))
            gained = (np.log(e[nxt, cols]) - lse).tolist()
            for b in range(n) if stop is None else np.flatnonzero(~done).tolist():
                texts[b].append(chars[nxt[b]])
                gains[b].append(gained[b])
                if stop is not None and texts[b][-1] == stop[-1] and "".join(texts[b][-len(stop) :]) == stop:
                    done[b] = True
            if len(texts[0]) - hold > sent and not done[0]:
                yield "".join(texts[0][sent : len(texts[0]) - hold])
                sent = len(texts[0]) - hold
            if stop is not None and done.all():
                break
            run.feed(nxt)
    cut = len(stop) if stop else 0
    samples = [Sample(prime, "".join(t[: len(t) - cut] if d else t), float(sum(g[: len(g) - cut] if d else g)), bool(d))
               for t, g, d in zip(texts, gains, done)]
    if len(samples[0].text) > sent:
        yield samples[0].text[sent:]
    return samples


def keep_best(samples: list[Sample], group: int) -> list[Sample]:
    """The most likely sample (lowest bits per character) of each run of ``group`` samples."""
    return [min(samples[i : i + group], key=_bpc_or_inf) for i in range(0, len(samples), group)]


def _bpc_or_inf(s: Sample) -> float:
    return s.bits_per_char if s.bits_per_char is not None else math.inf


def beam_search(model: Predictor, vocab: Vocab, prime: str = "\n", length: int = 1000, width: int = 5,
                stop: str | None = None) -> Sample:
    """The most likely continuation that beam search of ``width`` finds: at each step every
    beam is extended by every character and the ``width`` most probable sequences are kept.
    Beams that reach ``stop`` are set aside; the result is the best by bits per character.

    Beams are kept as back-pointers, (t, W) characters, parents and cumulative log p, so a
    step costs O(W V) whatever the length; a sequence is read back only when it is finished.
    """
    check_sampling(length, 1.0, None, None, width)
    score = np.full(width, -np.inf)
    score[0] = 0.0  # all beams start as the same sequence: expand only one
    chars_at, parent_at, score_at = [], [], []  # per step (W,) arrays

    def trace(t: int, j: int, steps: int) -> list[int]:
        """The beam index, step by step, of beam j's last ``steps`` positions up to step t."""
        out = []
        for s in range(t, t - steps, -1):
            out.append(j)
            j = parent_at[s][j]
        return out[::-1]

    def read(t: int, j: int, drop: int) -> Sample:
        """Beam j at step t as a Sample, without its last ``drop`` characters."""
        path = trace(t, j, t + 1)
        keep = path[: len(path) - drop]
        ids = [chars_at[s][k] for s, k in enumerate(keep)]
        logp = float(score_at[len(keep) - 1][keep[-1]]) if keep else 0.0
        return Sample(prime, vocab.decode(ids), logp, drop > 0)

    finished: list[Sample] = []
    with model.inference():
        run = _Run(model, vocab, prime, width)
        for t in range(length):
            e, lse = run.next()
            with np.errstate(divide="ignore"):  # a probability that underflowed to 0: log p = -inf
                cand = score[None, :] + (np.log(e) - lse)  # (V, W): log p of every one-character extension
            flat = cand.reshape(-1)
            top = np.argpartition(-flat, width - 1)[:width] if flat.size > width else np.arange(flat.size)
            top = top[np.argsort(-flat[top], kind="stable")]
            v, w = np.divmod(top, width)
            score = flat[top]
            chars_at.append(v)
            parent_at.append(w)
            score_at.append(score.copy())
            if stop and t + 1 >= len(stop):
                for j in np.flatnonzero(np.isfinite(score)):
                    tail = "".join(vocab.chars[chars_at[s][k]] for s, k in
                                   zip(range(t - len(stop) + 1, t + 1), trace(t, j, len(stop))))
                    if tail == stop:
                        finished.append(read(t, j, len(stop)))
                        score[j] = -np.inf  # set aside: no longer extended
                if not np.isfinite(score).any():
                    break
            run.feed(v, keep=w)
    live = [read(len(chars_at) - 1, j, 0) for j in np.flatnonzero(np.isfinite(score))] if chars_at else []
    pool = finished + live
    return min(pool, key=_bpc_or_inf) if pool else Sample(prime, "", 0.0)


def sample(model: Predictor, vocab: Vocab, length: int = 1000, prime: str = "\n", temperature: float = 1.0,
           top_k: int | None = None, greedy: bool = False, seed: int | None = None,
           top_p: float | None = None) -> Iterator[str]:
    """One sample, character by character, each yielded as soon as it is drawn."""
    for piece in _generation(model, vocab, prime, length, 1, temperature, top_k, top_p, greedy, seed, None):
        yield from piece
