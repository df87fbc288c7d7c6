"""The one interface every predictor of the next character has: the network alone
(network/model.py's ``Model``), the network mixed with an n-gram (mixture.py), and either of them
learning as it reads (adapt.py). Sampling, scoring, evaluation, the server and the report ask
nothing else of a model, so each works with all three; scoring alone also asks an adaptive one
(``Adaptive``) for its segment length and lets it learn after each segment (use/score.py).

Shape letters: T time, B streams, V vocabulary.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Predictor(Protocol):
    V: int  # the vocabulary's size

    def inference(self) -> AbstractContextManager:
        """``with p.inference():`` the caller promises not to train inside, so a predictor can
        prepare what does not change (the network's scaled weight copies) once."""

    def zero_state(self, B: int) -> list[tuple[np.ndarray, ...]]:
        """The state before any text, for B streams: per part (a layer, the n-gram's history) a
        tuple of arrays with B columns."""

    def forward(self, x: np.ndarray, state: list) -> tuple[np.ndarray, list]:
        """x (T, B) ids -> (scores (V, T*B), the next state). Column t*B + b is the distribution
        after step t of stream b: logits, or log-probabilities (a mixture's), which a softmax
        treats alike. May be a buffer the next call reuses. ``NotFiniteError`` when a score is
        not finite."""

    def nll(self, x: np.ndarray, y: np.ndarray, state: list) -> tuple[np.ndarray, list]:
        """x, y (T, B) ids -> (nats (T, B) float64: -ln p of each y given everything before it,
        the next state)."""
