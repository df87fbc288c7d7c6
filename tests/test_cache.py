"""The encoded-corpus cache (charlm/cache.py): encoded once, mapped after, never trusted when
stale or damaged, never left half-written."""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

import charlm.cache as cache
import charlm.data as data
from charlm.cli import main
from charlm.config import load_config
from charlm.data import load_corpus
from charlm.train import Trainer
from charlm.vocab import Vocab

from .conftest import random_text, tiny_overrides


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A cache of its own that takes any corpus, however small."""
    d = tmp_path / "cache"
    monkeypatch.setenv("CHARLM_CACHE", str(d))
    monkeypatch.setattr(cache, "CACHE_MIN_BYTES", 0)
    return d


@pytest.fixture
def texts(tmp_path):
    d = tmp_path / "texts"
    d.mkdir()
    (d / "a.txt").write_text("hero hell hole hello " * 100)
    (d / "b.txt").write_text(random_text(3000, seed=2))
    return d


def no_decoding(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the text was decoded again")

    monkeypatch.setattr(data, "_decoded_chunks", refuse)


def test_a_second_load_maps_the_cached_ids_without_decoding(store, texts, monkeypatch):
    first = load_corpus(texts)
    assert isinstance(first.ids, np.memmap) and len(list(store.glob("*.ids"))) == 1
    no_decoding(monkeypatch)
    second = load_corpus(texts)
    assert isinstance(second.ids, np.memmap)
    np.testing.assert_array_equal(second.ids, first.ids)
    assert (second.vocab.chars, second.fingerprint, second.summary) == (first.vocab.chars, first.fingerprint,
                                                                       first.summary)
    with pytest.raises(ValueError):  # read-only: nothing can change the cached corpus
        second.ids[0] = 0


def test_a_changed_file_is_a_new_entry(store, texts):
    before = load_corpus(texts)
    (texts / "b.txt").write_text("changed " * 400)
    after = load_corpus(texts)
    assert after.fingerprint["sha256"] != before.fingerprint["sha256"]
    assert after.vocab.decode(after.ids).endswith("changed " * 400)
    assert len(list(store.glob("*.json"))) == 2


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "garbage metadata", "metadata of another key",
                                    "ids missing"])
def test_a_damaged_entry_is_detected_and_rebuilt(store, texts, damage):
    good = load_corpus(texts)
    want = np.array(good.ids)
    ids_path, meta_path = next(store.glob("*.ids")), next(store.glob("*.json"))
    if damage == "flip a byte":
        raw = bytearray(ids_path.read_bytes())
        raw[1234] ^= 1
        ids_path.write_bytes(bytes(raw))
    elif damage == "truncate":
        ids_path.write_bytes(ids_path.read_bytes()[:-10])
    elif damage == "garbage metadata":
        meta_path.write_text("{not json")
    elif damage == "metadata of another key":
        meta = json.loads(meta_path.read_text())
        meta["key"] = "0" * 32
        meta_path.write_text(json.dumps(meta))
    else:
        ids_path.unlink()
    again = load_corpus(texts)
    np.testing.assert_array_equal(again.ids, want)
    assert cache.Entry(store, meta_path.stem).load() is not None  # rebuilt whole


def test_a_run_killed_while_encoding_leaves_no_entry(store, texts, monkeypatch):
    real = data._encoded

    def dies(*a, **k):
        for i, chunk in enumerate(real(*a, **k)):
            if i == 1:
                raise KeyboardInterrupt
            yield chunk

    monkeypatch.setattr(data, "_encoded", dies)
    with pytest.raises(KeyboardInterrupt):
        load_corpus(texts)
    assert list(store.iterdir()) == []  # no ids, no metadata, no temporary file


def test_a_checkpoints_vocabulary_gets_an_entry_of_its_own(store, texts):
    own = load_corpus(texts)
    wider = Vocab(sorted(set(own.vocab.chars) | set("XYZ")))
    other = load_corpus(texts, vocab=wider)
    assert other.vocab is wider and wider.decode(other.ids) == own.vocab.decode(own.ids)
    from charlm.audit import count_ids

    for c in (own, other):  # counted in the first pass (own vocabulary) or while encoding (a given one)
        np.testing.assert_array_equal(c.counts, count_ids(np.array(c.ids), len(c.vocab)))
    assert len(list(store.glob("*.json"))) == 2


def test_off_and_small_corpora_are_not_cached(tmp_path, texts, monkeypatch):
    monkeypatch.setenv("CHARLM_CACHE", "off")
    assert not isinstance(load_corpus(texts).ids, np.memmap)
    monkeypatch.setenv("CHARLM_CACHE", str(tmp_path / "c"))
    assert not isinstance(load_corpus(texts).ids, np.memmap)  # ~5 KB: under CACHE_MIN_BYTES
    assert not (tmp_path / "c").exists()


def test_training_reads_its_windows_from_the_mapping(store, texts, tmp_path):
    cfg = load_config(None, tiny_overrides(**{"train.max_steps": 12}))
    mapped = Trainer(cfg, load_corpus(texts), tmp_path / "a").run()
    in_memory = Trainer(cfg, load_corpus(texts, cache=False), tmp_path / "b").run()
    assert mapped.best_val == in_memory.best_val


def test_cache_command_lists_and_clears(store, texts):
    load_corpus(texts)
    r = CliRunner().invoke(main, ["cache", "--json"])
    listed = json.loads(r.output)
    assert listed["directory"] == str(store) and len(listed["entries"]) == 1
    assert listed["entries"][0]["corpus"]["files"] == 2
    r = CliRunner().invoke(main, ["cache"])
    assert r.exit_code == 0 and f"{store}: 1 corpora" in r.output and str(texts) in r.output
    r = CliRunner().invoke(main, ["cache", "--clear"])
    assert r.exit_code == 0 and "removed 2 files" in r.output
    assert list(store.iterdir()) == []
    assert os.environ["CHARLM_CACHE"] == str(store)


def test_the_audit_uses_the_counts_kept_while_encoding(store, texts, monkeypatch):
    from charlm.audit import audit, count_ids

    first = audit(load_corpus(texts))
    corpus = load_corpus(texts)  # from the cache
    np.testing.assert_array_equal(corpus.counts, count_ids(np.array(corpus.ids), len(corpus.vocab)))
    monkeypatch.setattr("charlm.audit.count_ids", lambda *a: pytest.fail("the corpus was read again"))
    assert [(c.char, c.count) for c in audit(corpus)] == [(c.char, c.count) for c in first]


def test_a_mapped_corpus_is_not_counted_as_memory_the_run_needs(store, texts, tmp_path):
    cfg = load_config(None, tiny_overrides())
    mapped = Trainer(cfg, load_corpus(texts), tmp_path / "a").memory.parts
    in_memory = Trainer(cfg, load_corpus(texts, cache=False), tmp_path / "b").memory.parts
    assert mapped["corpus (memory-mapped: beyond its evaluation sample, pages in use only)"] == 0 < in_memory["corpus"]


def test_resuming_in_the_corpus_own_vocabulary_reuses_its_entry(store, texts, monkeypatch):
    own = load_corpus(texts)
    no_decoding(monkeypatch)
    again = load_corpus(texts, vocab=Vocab(own.vocab.chars))  # as Trainer.resume loads it
    np.testing.assert_array_equal(again.ids, own.ids)
    assert len(list(store.glob("*.json"))) == 1
