"""char-rnn batching: the training split as B streams read T characters at a time, and the
evaluation's windows over a split.

Shape letters: N ids, B batch (streams), T window length (seq_length).
"""

from __future__ import annotations

import numpy as np

from ..errors import CorpusError


class Batches:
    """char-rnn batching: ``B`` contiguous streams, window ``k`` is the next ``T`` of each.

    ``window(k)`` -> x (T, B), y (T, B) ids, y the characters after x. The hidden state carries
    from window k to k+1 because stream b continues in column b. Each window is gathered from
    ``ids`` when it is asked for, so the split is never copied: it may be a memory-mapped file
    larger than memory, of which only the pages being read are resident. With ``streams``, only
    those of the B streams (a data-parallel rank's share): x and y are then (T, b).
    """

    def __init__(self, ids: np.ndarray, batch_size: int, seq_length: int, name: str = "corpus",
                 streams: slice = slice(None)):
        need = batch_size * (seq_length + 1)
        if len(ids) < need:
            raise CorpusError(
                f"{name}: the training split has {len(ids)} characters, but batch_size "
                f"{batch_size} x (seq_length {seq_length} + 1) needs at least {need}; "
                "use a longer corpus or a smaller batch_size/seq_length"
            )
        self.T, self.ids = seq_length, ids
        stream_len = len(ids) // batch_size
        self.num_windows = (stream_len - 1) // seq_length
        # (T+1, B) positions of window 0: stream b starts at b * stream_len.
        self._at = np.arange(seq_length + 1)[:, None] + (np.arange(batch_size) * stream_len)[None, streams]
        self.B = self._at.shape[1]  # this rank's streams (all B without ``streams``)

    @property
    def chars_per_window(self) -> int:
        return self.B * self.T

    def window(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        w = self.ids[self._at + k * self.T]  # (T+1, B), one gather of B short runs
        return w[:-1], w[1:]


def eval_sample(ids: np.ndarray, max_chars: int | None, pieces: int) -> np.ndarray:
    """At most ``max_chars`` of ``ids`` (M,) for a bounded evaluation: ``pieces`` stretches of
    equal length, evenly spaced over all of it, joined (a copy of max_chars ids); ``ids`` itself
    when it is no longer or max_chars is None. The same ids every time for the same arguments."""
    if max_chars is None or len(ids) <= max_chars:
        return ids
    pieces = max(1, min(pieces, max_chars // 2))
    length = max_chars // pieces
    starts = np.linspace(0, len(ids) - length, pieces).astype(np.int64)
    return np.concatenate([ids[s : s + length] for s in starts])


def eval_streams(n_ids: int, batch_size: int, seq_length: int) -> int:
    """How many streams ``eval_windows`` cuts n_ids ids into."""
    return max(1, min(batch_size, (n_ids - 1) // seq_length))


def eval_windows(ids: np.ndarray, batch_size: int, seq_length: int, streams: slice = slice(None)):
    """Cover (nearly) all of ``ids`` with up to ``batch_size`` streams for evaluation
    (``streams`` of them: a data-parallel rank's share).

    Yields (x (t, B'), y (t, B'), first) with t <= T; ``first`` marks the window where the
    state starts fresh. Streams are views, so a large split is never copied whole.
    """
    if len(ids) < 2:
        return
    b = eval_streams(len(ids), batch_size, seq_length)
    stream_len = (len(ids) - 1) // b
    starts = (np.arange(b) * stream_len)[streams]
    if len(starts) == 0:
        return
    for s in range(0, stream_len, seq_length):
        t = min(seq_length, stream_len - s)
        cols = starts[None, :] + np.arange(s, s + t)[:, None]  # (t, B')
        yield ids[cols], ids[cols + 1], s == 0
