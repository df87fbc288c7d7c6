"""Corpus loading and char-rnn style batching.

Shape letters: N corpus length, B batch (streams), T window length (seq_length).

Loading is two vectorised passes over byte chunks (count code points, then encode), so its
cost is linear in the file size and its peak memory is the raw bytes plus the 1- or 2-byte
token array plus one chunk; the text is never held as a Python string whole.
"""

from __future__ import annotations

import codecs
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CorpusError
from .vocab import MAX_CODE_POINT, Vocab, code_points, describe_chars

CHUNK_BYTES = 2 << 20  # temporaries per chunk are ~10x its size: keep them small


def corpus_files(path: str | os.PathLike) -> list[Path]:
    """A file, or the ``*.txt`` files under a directory in sorted order."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*.txt") if f.is_file() and not f.name.startswith("."))
        if not files:
            raise CorpusError(f"{p}: directory has no .txt files to train on")
        return files
    if not p.exists():
        raise CorpusError(f"{p}: no such file or directory")
    if not p.is_file():
        raise CorpusError(f"{p}: not a regular file")
    return [p]


def _decoded_chunks(path: Path, hasher=None):
    """Yield the text of ``path`` in chunks; a ``CorpusError`` at the first byte that is not text.
    ``hasher`` (a hashlib object) is fed the raw bytes."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0
    try:
        f = open(path, "rb")
    except OSError as e:
        raise CorpusError(f"{path}: cannot read: {e.strerror}") from None
    with f:
        while True:
            raw = f.read(CHUNK_BYTES)
            if hasher is not None:
                hasher.update(raw)
            nul = raw.find(b"\0")
            if nul >= 0:
                raise CorpusError(
                    f"{path}: looks like a binary file (NUL byte at offset {offset + nul}); "
                    "charlm trains on UTF-8 text"
                )
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                at = offset - pending + e.start
                raise CorpusError(
                    f"{path}: not UTF-8 text: byte 0x{e.object[e.start]:02X} at offset {at} "
                    f"({e.reason}); convert it first, e.g. iconv -f latin1 -t utf-8"
                ) from None
            offset += len(raw)
            if text:
                yield text
            if not raw:
                return


@dataclass
class Corpus:
    """A whole corpus as token ids. ids (N,) uint8/uint16.

    ``fingerprint``: its path, length in characters and the SHA-256 of its bytes (of the files
    concatenated in order, for a directory): what a checkpoint records to know its data.
    """

    ids: np.ndarray
    vocab: Vocab
    fingerprint: dict

    def __len__(self) -> int:
        return len(self.ids)


def describe_fingerprint(fp: dict) -> str:
    return f"{fp.get('path', '?')} ({fp.get('chars', 0):,} characters, sha256 {str(fp.get('sha256', '?'))[:12]})"


def load_corpus(path: str | os.PathLike, vocab: Vocab | None = None) -> Corpus:
    """Read UTF-8 text into token ids. Builds the vocabulary unless one is given."""
    files = corpus_files(path)
    counts = np.zeros(MAX_CODE_POINT + 1, dtype=np.int64) if vocab is None else None
    total, hasher = 0, hashlib.sha256()
    for f in files:
        n = 0
        for text in _decoded_chunks(f, hasher):
            n += len(text)
            if counts is not None:
                counts += np.bincount(code_points(text), minlength=len(counts))
        if n == 0:
            raise CorpusError(f"{f}: file is empty")
        total += n
    if vocab is None:
        vocab = Vocab.from_counts(counts)
    ids = np.empty(total, dtype=vocab.dtype)
    at = 0
    for f in files:
        for text in _decoded_chunks(f):
            chunk = vocab.ids_of_code_points(code_points(text))
            if (chunk < 0).any():
                raise CorpusError(
                    f"{f}: has characters outside the checkpoint's vocabulary: "
                    f"{describe_chars(vocab.unknown(text))}"
                )
            ids[at : at + len(chunk)] = chunk
            at += len(chunk)
    return Corpus(ids=ids, vocab=vocab, fingerprint={"path": str(path), "chars": total, "sha256": hasher.hexdigest()})


def read_text(path: str | os.PathLike) -> str:
    """A corpus (file or directory) as one string, for searching it (``novelty``)."""
    return "".join(text for f in corpus_files(path) for text in _decoded_chunks(f))


def split(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The last ``val_fraction`` of the characters is validation: (train (N1,), val (N2,)) views."""
    n_val = int(round(len(ids) * val_fraction))
    return ids[: len(ids) - n_val], ids[len(ids) - n_val :]


class Batches:
    """char-rnn batching: ``B`` contiguous streams, window ``k`` is the next ``T`` of each.

    ``window(k)`` -> x (T, B), y (T, B) contiguous ids, y the characters after x. The hidden
    state carries from window k to k+1 because stream b continues in column b.
    """

    def __init__(self, ids: np.ndarray, batch_size: int, seq_length: int, name: str = "corpus"):
        need = batch_size * (seq_length + 1)
        if len(ids) < need:
            raise CorpusError(
                f"{name}: the training split has {len(ids)} characters, but batch_size "
                f"{batch_size} x (seq_length {seq_length} + 1) needs at least {need}; "
                "use a longer corpus or a smaller batch_size/seq_length"
            )
        self.B, self.T = batch_size, seq_length
        stream_len = len(ids) // batch_size
        self.num_windows = (stream_len - 1) // seq_length
        # (stream_len, B): stream b is column b, so a window is one contiguous row slice.
        self._tb = np.ascontiguousarray(ids[: stream_len * batch_size].reshape(batch_size, stream_len).T)

    @property
    def chars_per_window(self) -> int:
        return self.B * self.T

    def window(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        s = k * self.T
        return self._tb[s : s + self.T], self._tb[s + 1 : s + self.T + 1]


def eval_windows(ids: np.ndarray, batch_size: int, seq_length: int):
    """Cover (nearly) all of ``ids`` with up to ``batch_size`` streams for evaluation.

    Yields (x (t, B'), y (t, B'), first) with t <= T; ``first`` marks the window where the
    state starts fresh. Streams are views, so a large split is never copied whole.
    """
    if len(ids) < 2:
        return
    b = max(1, min(batch_size, (len(ids) - 1) // seq_length))
    stream_len = (len(ids) - 1) // b
    starts = np.arange(b) * stream_len
    for s in range(0, stream_len, seq_length):
        t = min(seq_length, stream_len - s)
        cols = starts[None, :] + np.arange(s, s + t)[:, None]  # (t, B')
        yield ids[cols], ids[cols + 1], s == 0
