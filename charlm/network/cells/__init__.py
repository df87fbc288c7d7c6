"""Recurrent cells. Each runs a whole (T, B) window: input projection of all T steps as one
GEMM (a row gather for the one-hot first layer), then only the recurrence in the time loop."""

from .base import Layer
from .gru import GRU
from .lstm import LSTM
from .rnn import RNN

CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}

__all__ = ["CELLS", "GRU", "LSTM", "Layer", "RNN"]
