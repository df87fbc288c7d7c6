"""Sampling text from a model, one character at a time (batch 1)."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from .errors import CharlmError
from .model import Model
from .vocab import Vocab


def sample(model: Model, vocab: Vocab, length: int = 1000, prime: str = "\n", temperature: float = 1.0,
           top_k: int | None = None, greedy: bool = False, seed: int | None = None) -> Iterator[str]:
    """Yield ``length`` new characters after feeding ``prime`` through the model.

    temperature > 0 divides the logits; top_k keeps the k most likely characters; greedy
    takes the most likely one (argmax) every step. Same seed, same text.
    """
    if length < 0:
        raise CharlmError(f"--length must be >= 0, got {length}")
    if not greedy and not temperature > 0:
        raise CharlmError(f"--temperature must be > 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise CharlmError(f"--top-k must be >= 1, got {top_k}")
    if not prime:
        raise CharlmError("the prime text must have at least one character (use the default newline)")
    ids = vocab.encode(prime, what="prime text").astype(np.int64)
    rng = np.random.default_rng(seed)
    V, k = len(vocab), (min(top_k, len(vocab)) if top_k else None)
    with model.inference():
        state = model.zero_state(1)
        if len(ids) > 1:
            _, state = model.forward(ids[:-1, None], state)
        x = np.array([[ids[-1]]], dtype=np.int64)
        for _ in range(length):
            logits, state = model.forward(x, state)
            z = logits[:, 0].astype(np.float64)
            if greedy:
                nxt = int(np.argmax(z))
            else:
                z /= temperature
                if k is not None and k < V:
                    z[np.argpartition(z, V - k)[: V - k]] = -np.inf
                z -= z.max()
                cdf = np.cumsum(np.exp(z, out=z))  # inverse-CDF draw: one uniform per character
                nxt = min(V - 1, int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")))
            x[0, 0] = nxt
            yield vocab.chars[nxt]
