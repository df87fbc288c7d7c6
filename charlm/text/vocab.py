"""Character vocabulary: the sorted set of a corpus's characters; a fine-tuned model's is its
source's, in the source's order, with the characters new in its corpus appended (sorted).

Character ``i`` of the vocabulary is the one-hot unit vector e_i; the model gathers rows of its
first weight matrix by id instead of multiplying by one-hot vectors (the same numbers, see
tests/network/test_model.py). Encoding is vectorised through a code-point lookup table.
"""

from __future__ import annotations

import numpy as np

from ..errors import VocabError

MAX_CODE_POINT = 0x10FFFF


def code_points(text: str) -> np.ndarray:
    """text -> (N,) uint32 Unicode code points, without a Python loop per character."""
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.uint32)
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id (1 or 2 bytes per character)."""
    if vocab_size <= 256:
        return np.dtype(np.uint8)
    if vocab_size <= 65536:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def describe_chars(chars) -> str:
    """A readable, quoted list of characters for error messages: 'é' (U+00E9)."""
    shown = [f"{c!r} (U+{ord(c):04X})" for c in list(chars)[:10]]
    more = len(chars) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


class Vocab:
    """An ordered set of characters. ``chars[i]`` is the character with id ``i``."""

    def __init__(self, chars):
        chars = list(chars)
        if len(chars) == 0:
            raise VocabError("a vocabulary needs at least one character")
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise VocabError("a vocabulary must be distinct single characters")
        if any(0xD800 <= ord(c) <= 0xDFFF for c in chars):  # UTF-8 text never decodes to one
            raise VocabError("a vocabulary's characters must be Unicode scalar values, not lone surrogates")
        self.chars = tuple(chars)
        self.dtype = token_dtype(len(chars))
        codes = np.fromiter((ord(c) for c in chars), dtype=np.int64, count=len(chars))
        # Lookup table from code point to id (-1: not in the vocabulary); at most max code + 1
        # entries, so a vocabulary of ASCII costs 128 entries and one with emoji ~0.5 MB.
        self._lut = np.full(int(codes.max()) + 1, -1, dtype=np.int32)
        self._lut[codes] = np.arange(len(chars), dtype=np.int32)

    @classmethod
    def from_counts(cls, counts: np.ndarray) -> Vocab:
        """counts (C,) occurrences per code point -> the vocabulary of code points that occur."""
        return cls(chr(c) for c in np.flatnonzero(counts))

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        return cls.from_counts(np.bincount(code_points(text)))

    def extended(self, chars) -> Vocab:
        """This vocabulary with the characters of ``chars`` it lacks appended in code-point
        order: every id it had keeps its character."""
        new = sorted(set(chars) - set(self.chars))
        return self if not new else Vocab(self.chars + tuple(new))

    def __len__(self) -> int:
        return len(self.chars)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.chars == other.chars

    def __repr__(self) -> str:
        return f"Vocab({len(self)} chars)"

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of ``text`` that are not in the vocabulary, in order of first use."""
        cps = code_points(text)
        bad = cps >= len(self._lut)
        bad[~bad] = self._lut[cps[~bad]] < 0
        return list(dict.fromkeys(text[i] for i in np.flatnonzero(bad)))

    def ids_of_code_points(self, cps: np.ndarray) -> np.ndarray:
        """(N,) code points -> (N,) int32 ids, -1 where unknown."""
        if len(cps) == 0 or cps.max() < len(self._lut):
            return self._lut[cps]
        ids = np.full(cps.shape, -1, dtype=np.int32)
        ok = cps < len(self._lut)
        ids[ok] = self._lut[cps[ok]]
        return ids

    def encode(self, text: str, what: str = "text") -> np.ndarray:
        """text -> (N,) ids; a ``VocabError`` naming every unknown character."""
        ids = self.ids_of_code_points(code_points(text))
        if (ids < 0).any():
            missing = self.unknown(text)
            raise VocabError(
                f"{what} has {len(missing)} character(s) not in the model's vocabulary: "
                f"{describe_chars(missing)}"
            )
        return ids.astype(self.dtype)

    def decode(self, ids) -> str:
        # Not through a NumPy unicode array: those silently drop NUL characters.
        chars = self.chars
        return "".join([chars[i] for i in np.asarray(ids).tolist()])
