"""A corpus's vocabulary, character by character, with the characters that usually mean the
text needs cleaning before training: a byte-order mark, Windows line ends, control and
zero-width characters, and characters so rare the model cannot learn them."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np

from .corpus import Corpus

RARE = 5  # seen fewer times than this: the model sees too few examples to learn the character
ZERO_WIDTH = {"\u200b": "zero-width space", "\u200c": "zero-width non-joiner", "\u200d": "zero-width joiner",
              "\u2060": "word joiner", "\u00ad": "soft hyphen"}


@dataclass
class CharCount:
    char: str
    count: int
    flags: list[str]

    def to_dict(self) -> dict:
        return {"char": self.char, "code_point": f"U+{ord(self.char):04X}", "count": self.count, "flags": self.flags}


def flags_of(char: str, count: int) -> list[str]:
    flags = []
    if char == "\ufeff":
        flags.append("byte-order mark")
    elif char == "\r":
        flags.append("carriage return (Windows line ends?)")
    elif char in ZERO_WIDTH:
        flags.append(ZERO_WIDTH[char])
    elif unicodedata.category(char) in ("Cc", "Cf") and char not in "\n\t":
        flags.append("control character")
    if count < RARE:
        flags.append(f"rare (fewer than {RARE})")
    return flags


COUNT_CHUNK = 1 << 22  # np.bincount widens its input to int64: 8x a chunk, never 8x the corpus


def count_ids(ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """How often each id occurs in ids (N,), chunk by chunk: (vocab_size,) int64."""
    counts = np.zeros(vocab_size, np.int64)
    for i in range(0, len(ids), COUNT_CHUNK):
        counts += np.bincount(ids[i : i + COUNT_CHUNK], minlength=vocab_size)
    return counts


def audit(corpus: Corpus) -> list[CharCount]:
    """Every character of the vocabulary with its count in the corpus and its flags, by id
    (from the counts loading kept, when it did: then the corpus is not read again)."""
    counts = corpus.counts if corpus.counts is not None else count_ids(corpus.ids, len(corpus.vocab))
    return [CharCount(c, int(n), flags_of(c, int(n))) for c, n in zip(corpus.vocab.chars, counts)]


def show_char(c: str) -> str:
    """A character as a person can read it in a table: printable as itself, else its escape."""
    if c == " ":
        return "' '"
    return c if c.isprintable() else repr(c)[1:-1]
