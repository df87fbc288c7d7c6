"""The novelty check (charlm/text/novelty.py) and the corpus audit (charlm/text/audit.py)."""


import numpy as np
import pytest

from charlm.text.audit import audit
from charlm.text.corpus import load_corpus
from charlm.text.novelty import longest_copied


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


def test_counting_goes_chunk_by_chunk_and_gives_bincount(monkeypatch):
    import numpy as np

    import charlm.text.audit as audit_module

    ids = np.random.default_rng(0).integers(0, 7, 10_001).astype(np.uint8)
    monkeypatch.setattr(audit_module, "COUNT_CHUNK", 1000)
    np.testing.assert_array_equal(audit_module.count_ids(ids, 9), np.bincount(ids, minlength=9))


def test_a_large_corpus_baseline_is_fitted_on_a_sample_and_says_so(tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    import charlm.predict.baseline as baseline_module
    from charlm.cli import main

    monkeypatch.setattr(baseline_module, "MAX_CHARS", 5000)
    monkeypatch.setattr(baseline_module, "MAX_BASELINE_VAL_CHARS", 1000)
    p = tmp_path / "big.txt"
    p.write_text("the quick brown fox jumps over the lazy dog. " * 500)
    r = CliRunner().invoke(main, ["baseline", str(p)])
    assert r.exit_code == 0, r.output
    assert "fitted on the last 5,000 training characters (a sample), scored on 1,000 validation characters " \
           "(evenly spaced stretches)" in r.output
    r = CliRunner().invoke(main, ["baseline", str(p), "--json"])
    d = json.loads(r.output)
    assert (d["train_chars"], d["val_chars"], d["sampled"]) == (5000, 1000, True)
