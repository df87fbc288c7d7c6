"""The novelty check (charlm/novelty.py) and the corpus audit (charlm/audit.py)."""


import numpy as np
import pytest

from charlm.audit import audit
from charlm.data import load_corpus
from charlm.novelty import longest_copied


@pytest.mark.parametrize("seed", range(20))
def test_longest_copied_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    corpus = "".join(rng.choice(list("abc"), 60))
    sample = "".join(rng.choice(list("abcd"), 25))
    want = max(j - i for i in range(len(sample)) for j in range(i, len(sample) + 1) if sample[i:j] in corpus)
    got = longest_copied(sample, corpus)
    assert got.length == want and got.text in sample and corpus[got.offset : got.offset + want] == got.text

def test_audit_counts_and_flags(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("\ufeffaa\r\nb\u200bb\x1b" + "a" * 10, encoding="utf-8")
    rows = {c.char: c for c in audit(load_corpus(p))}
    assert rows["a"].count == 12 and rows["a"].flags == []
    assert rows["\ufeff"].flags[0] == "byte-order mark" and rows["\r"].flags[0].startswith("carriage return")
    assert rows["\u200b"].flags[0] == "zero-width space" and rows["\x1b"].flags[0] == "control character"
    assert rows["\n"].flags == ["rare (fewer than 5)"]
