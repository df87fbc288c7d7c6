"""How much memory a training run needs, computed from the config before anything is
allocated, and how much the machine has.

The estimate sums the arrays a run holds at its peak: the corpus ids, parameters, gradients,
optimizer slots and its scratch vector, each layer's forward and backward buffers (cells
declare them in ``buffer_shapes``; forward and head buffers are counted twice because
evaluation windows keep a second set), dropout masks, the layers' work arrays
(``scratch_shapes``), the head's logits, the evaluation sample and the n-gram model of a
mixture. tests/network/test_memory.py checks it against tracemalloc's peak for real runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import Config
from ..errors import TrainingError
from ..system import available_memory, format_bytes
from ..text.corpus import split_sizes
from ..text.vocab import token_dtype
from .model import dropout_sites, make_layers, param_shapes, window_shapes
from .optim import slot_names

# Kneser-Ney's peak while it counts (sorted keys, np.unique's copies), and what scoring keeps
# per character (its chunks, the nats): measured with tracemalloc on tiny Shakespeare, 28-39
# and ~20 bytes per character.
NGRAM_FIT_BYTES = 40
NGRAM_SCORE_BYTES = 24


@dataclass
class MemoryEstimate:
    parts: dict[str, int]  # what -> bytes

    @property
    def total(self) -> int:
        return sum(self.parts.values())


def _nbytes(shapes, itemsize) -> int:
    return sum(int(np.prod(s, dtype=np.int64)) for s in shapes) * itemsize


def training_memory(config: Config, vocab_size: int, corpus_chars: int, mapped: bool = False, workers: int = 1,
                    rank: int = 0) -> MemoryEstimate:
    """``mapped``: the ids are a memory map of the corpus cache (cache.py), which the kernel
    pages in and out as training reads it: not memory the run must have, so not counted.
    With ``workers``, what rank ``rank`` of a data-parallel job holds: B / workers streams'
    buffers, a whole copy of the weights and optimizer, the n-gram on rank 0 only."""
    m, d = config.model, config.data
    item = np.dtype(m.dtype).itemsize
    T, B, V = d.seq_length, max(1, d.batch_size // workers), vocab_size
    n_params = _nbytes(param_shapes(m, V).values(), 1)
    slots = len(slot_names(config.train))
    acts = 0
    for layer in make_layers(m, V):  # the layers' shapes, without their weights
        shapes = layer.buffer_shapes("fwd", T, B)
        acts += 2 * _nbytes(shapes.values(), item) + _nbytes(layer.buffer_shapes("bwd", T, B).values(), item)
        acts += _nbytes(layer.scratch_shapes(T, B).values(), item)
    head_shapes, dropout_shapes = window_shapes(m, V, T, B)
    dropout = len(dropout_sites(m)) * _nbytes(dropout_shapes.values(), item)
    head = 2 * _nbytes(head_shapes.values(), item)
    tok = token_dtype(V).itemsize
    train_chars, val_chars = split_sizes(corpus_chars, d.val_fraction)
    eval_chars = val_chars if config.train.eval_chars is None else min(val_chars, config.train.eval_chars)
    # The ids (training reads its windows from them, no copy), and the evaluation sample's copy.
    ids = ((0 if mapped else corpus_chars) + (eval_chars if eval_chars < val_chars else 0)) * tok
    parts = {
        "parameters and gradients": 2 * n_params * item,
        f"optimizer ({config.train.optimizer})": (slots + 1) * n_params * item,
        "activations and buffers": acts + dropout + head,
        "corpus (memory-mapped: beyond its evaluation sample, pages in use only)" if mapped else "corpus": ids,
    }
    if m.ngram_order and rank == 0:
        parts["n-gram model"] = NGRAM_FIT_BYTES * train_chars + NGRAM_SCORE_BYTES * eval_chars
    return MemoryEstimate(parts)


def check_fits(estimate: MemoryEstimate, available: int | None = None, ranks: int = 1) -> None:
    """A ``TrainingError`` naming both numbers when the run cannot fit in memory: with
    ``ranks`` processes of the job on this machine, each needing ``estimate``."""
    available = available_memory() if available is None else available
    if available is not None and estimate.total * ranks > available:
        biggest = max(estimate.parts, key=estimate.parts.get)
        each = f" ({ranks} workers, each about {format_bytes(estimate.total)})" if ranks > 1 else ""
        raise TrainingError(
            f"this run needs about {format_bytes(estimate.total * ranks)} of memory{each} but "
            f"{format_bytes(available)} is "
            f"available (largest part: {biggest}, {format_bytes(estimate.parts[biggest])}); use a smaller "
            "model.hidden_size, model.num_layers, data.batch_size or data.seq_length"
        )
