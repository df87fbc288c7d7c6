"""Does the model compose or copy? The longest stretch of a sample that also occurs, verbatim,
in the training text."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Copied:
    length: int  # characters
    text: str
    offset: int  # where it occurs in the corpus (character offset), -1 when length is 0

    def to_dict(self) -> dict:
        return {"longest_copied": self.length, "copied_text": self.text, "corpus_offset": self.offset}


def longest_copied(sample: str, corpus: str) -> Copied:
    """The longest substring of ``sample`` found in ``corpus``.

    Two pointers: if sample[i:j] occurs in the corpus, so does sample[i+1:j], so j never moves
    back and the search costs about 2 * len(sample) substring searches (str.find is a fast
    C search).
    """
    best = Copied(0, "", -1)
    j = 0
    for i in range(len(sample)):
        j = max(j, i)
        while j < len(sample) and corpus.find(sample[i : j + 1]) >= 0:
            j += 1
        if j - i > best.length:
            best = Copied(j - i, sample[i:j], corpus.find(sample[i:j]))
    return best
