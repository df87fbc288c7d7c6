"""The encoded-corpus cache (charlm/text/cache.py): encoded once, mapped after, never trusted when
stale or damaged, never left half-written."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import charlm.text.cache as cache
import charlm.text.corpus as data
from charlm.cli import main
from charlm.config import load_config
from charlm.errors import CorpusError
from charlm.text.corpus import load_corpus
from charlm.text.vocab import Vocab
from charlm.training.state import CorpusMismatchError
from charlm.training.trainer import Trainer
from tests.helpers import random_text, tiny_overrides


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


def entry_files(store):
    return sorted(store.glob("*.corpus"))


def leftovers(store):
    return sorted(store.glob(".*.tmp"))


def no_decoding(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the text was decoded again")

    monkeypatch.setattr(data, "_decoded_chunks", refuse)


def test_a_second_load_maps_the_cached_ids_without_decoding(store, texts, monkeypatch):
    first = load_corpus(texts)
    assert isinstance(first.ids, np.memmap) and len(entry_files(store)) == 1
    no_decoding(monkeypatch)
    second = load_corpus(texts)
    assert isinstance(second.ids, np.memmap)
    np.testing.assert_array_equal(second.ids, first.ids)
    assert (second.vocab.chars, second.fingerprint, second.summary) == (first.vocab.chars, first.fingerprint,
                                                                       first.summary)
    with pytest.raises(ValueError):  # read-only: nothing can change the cached corpus
        second.ids[0] = 0


def test_a_changed_file_gets_a_new_entry_that_replaces_the_old(store, texts):
    before = load_corpus(texts)
    (texts / "b.txt").write_text("changed " * 400)
    after = load_corpus(texts)
    assert after.fingerprint["sha256"] != before.fingerprint["sha256"]
    assert after.vocab.decode(after.ids).endswith("changed " * 400)
    assert len(entry_files(store)) == 1  # the entry of the old content is gone with it


def test_a_file_changed_in_place_with_its_size_and_time_put_back_is_never_served_stale(store, texts, tmp_path):
    """The listing (names, sizes, times, inodes) finds an entry; only the content proves it."""
    before = load_corpus(texts)
    p = texts / "b.txt"
    st = p.stat()
    with open(p, "r+b") as f:  # same inode, same size
        f.write(b"CHANGED!")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)
    after = load_corpus(texts)
    assert "CHANGED!" in after.vocab.decode(after.ids)
    assert after.fingerprint["sha256"] != before.fingerprint["sha256"]
    assert load_corpus(texts, cache=False).fingerprint == after.fingerprint


def test_resume_notices_a_file_changed_in_place(store, texts, tmp_path):
    cfg = load_config(None, tiny_overrides(**{"train.max_steps": 4}))
    Trainer(cfg, load_corpus(texts), tmp_path / "run").run()
    p = texts / "a.txt"
    st = p.stat()
    p.write_bytes(p.read_bytes().replace(b"hero", b"here"))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(CorpusMismatchError, match="is not the corpus this run was trained on"):
        Trainer.resume(tmp_path / "run", texts, cfg.__class__.from_dict(cfg.to_dict()))


def test_a_file_that_changes_between_the_two_passes_is_an_error_and_leaves_no_entry(store, texts, monkeypatch):
    """Counting and encoding read the text twice: a change in between (same length) would train
    on text that the recorded fingerprint does not describe."""
    real = data._scan

    def scan_then_change(path, count):
        s = real(path, count)
        if path.name == "b.txt":
            path.write_bytes(path.read_bytes()[::-1])  # same characters, same length, other text
        return s

    monkeypatch.setattr(data, "_scan", scan_then_change)
    with pytest.raises(CorpusError, match="changed while it was being read"):
        load_corpus(texts)
    with pytest.raises(CorpusError, match="changed while it was being read"):
        load_corpus(texts, cache=False)
    assert entry_files(store) == [] and leftovers(store) == []


def damage_entry(path, damage):
    """Damage a cache entry file in one of the ways the parametrised test names."""
    raw = bytearray(path.read_bytes())
    header, meta = cache.read_header(raw)
    ids_at, meta_at = cache.HEADER_BYTES, cache.HEADER_BYTES + header.ids_bytes
    if damage == "flip an id":
        raw[ids_at + 1234] ^= 1
    elif damage == "flip a metadata byte":
        raw[meta_at + 20] ^= 1
    elif damage == "flip a header byte":
        raw[3] ^= 1
    elif damage == "truncate":
        del raw[-10:]
    elif damage == "empty":
        raw = bytearray()
    else:  # a consistent entry (checksums recomputed) whose contents lie
        if damage == "vocabulary too short":
            meta["vocab"] = meta["vocab"][:-1]
        elif damage == "counts wrong":
            meta["counts"][0] += 1
        elif damage == "fingerprint not a dict":
            meta["fingerprint"] = ["x"]
        elif damage == "another file's content":
            meta["files"][0][2] = "0" * 64
        elif damage == "ids out of range":
            ids = np.frombuffer(bytes(raw[ids_at:meta_at]), np.uint8).copy()
            ids[7] = 250
            raw[ids_at:meta_at] = ids.tobytes()
            meta["ids_sha256"] = cache.hashlib.sha256(ids.tobytes()).hexdigest()
        raw = bytearray(cache.entry_bytes(header.key, bytes(raw[ids_at:meta_at]), meta))
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", ["flip an id", "flip a metadata byte", "flip a header byte", "truncate", "empty",
                                    "vocabulary too short", "counts wrong", "fingerprint not a dict",
                                    "another file's content", "ids out of range"])
def test_a_damaged_entry_is_never_used_and_is_rebuilt(store, texts, damage):
    good = load_corpus(texts)
    want = (np.array(good.ids), good.vocab.chars, good.fingerprint, good.counts.tolist())
    [path] = entry_files(store)
    damage_entry(path, damage)
    again = load_corpus(texts)
    assert (np.array(again.ids).tolist(), again.vocab.chars, again.fingerprint, again.counts.tolist()) == \
        (want[0].tolist(), *want[1:])
    [rebuilt] = entry_files(store)
    assert cache.read_header(rebuilt.read_bytes())[1]["fingerprint"] == good.fingerprint


@pytest.mark.parametrize("unnamed", [True, False], ids=["unnamed file", "named temporary"])
def test_a_writer_killed_mid_entry_leaves_nothing_that_stays(store, texts, tmp_path, unnamed):
    """kill -9 of a process writing an entry: an unnamed file (O_TMPFILE) vanishes with it; where
    the filesystem has none, its named temporary stays, unlocked, ``charlm cache`` shows it and
    the next use of the cache deletes it."""
    script = tmp_path / "writer.py"
    script.write_text(
        "import os, signal, sys\n"
        + ("" if unnamed else "os.O_TMPFILE = os.O_DIRECTORY  # open() then fails as on a filesystem without it\n")
        + "import charlm.text.cache as cache, charlm.text.corpus as data\n"
        "cache.CACHE_MIN_BYTES = 0\n"
        "real = data._encoded\n"
        "def dies(*a, **k):\n"
        "    for i, chunk in enumerate(real(*a, **k)):\n"
        "        if i == 1:\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n"
        "        yield chunk\n"
        "data._encoded = dies\n"
        f"data.load_corpus({str(texts)!r})\n"
    )
    r = subprocess.run([sys.executable, str(script)], env={**os.environ, "CHARLM_CACHE": str(store)})
    assert r.returncode == -signal.SIGKILL
    assert entry_files(store) == [] and len(leftovers(store)) == (0 if unnamed else 1)
    if not unnamed:
        listed = CliRunner().invoke(main, ["cache"])
        assert "left by a process that was killed" in listed.output, listed.output
    load_corpus(texts)
    assert leftovers(store) == [] and len(entry_files(store)) == 1


def test_a_live_writers_temporary_is_left_alone(store, texts, monkeypatch):
    """A named temporary whose writer still runs (it holds the lock) is not swept, nor cleared."""
    monkeypatch.setattr(os, "O_TMPFILE", os.O_DIRECTORY)  # a filesystem without unnamed files
    key = "a" * 32
    with cache.Entry(store, key).writer() as w:
        w.write(np.zeros(10, np.uint8))
        load_corpus(texts)
        assert CliRunner().invoke(main, ["cache", "--clear"]).exit_code == 0
        assert len(leftovers(store)) == 1
        assert "being written" in CliRunner().invoke(main, ["cache"]).output
    assert leftovers(store) == []  # the writer left without committing: its own temporary is gone


def test_a_checkpoints_vocabulary_gets_an_entry_of_its_own(store, texts):
    own = load_corpus(texts)
    wider = Vocab(sorted(set(own.vocab.chars) | set("XYZ")))
    other = load_corpus(texts, vocab=wider)
    assert other.vocab is wider and wider.decode(other.ids) == own.vocab.decode(own.ids)
    from charlm.text.audit import count_ids

    for c in (own, other):  # counted in the first pass (own vocabulary) or while encoding (a given one)
        np.testing.assert_array_equal(c.counts, count_ids(np.array(c.ids), len(c.vocab)))
    assert len(entry_files(store)) == 2


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
    assert r.exit_code == 0 and "removed 1 file" in r.output
    assert list(store.iterdir()) == []
    assert os.environ["CHARLM_CACHE"] == str(store)


def test_the_audit_uses_the_counts_kept_while_encoding(store, texts, monkeypatch):
    from charlm.text.audit import audit, count_ids

    first = audit(load_corpus(texts))
    corpus = load_corpus(texts)  # from the cache
    np.testing.assert_array_equal(corpus.counts, count_ids(np.array(corpus.ids), len(corpus.vocab)))
    monkeypatch.setattr("charlm.text.audit.count_ids", lambda *a: pytest.fail("the corpus was read again"))
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
    assert len(entry_files(store)) == 1


# ---- a cache directory that cannot be used, and one shared with other files ------------------

def test_a_cache_path_that_is_a_file_trains_from_memory_and_says_so_once(tmp_path, texts, monkeypatch):
    monkeypatch.setattr(cache, "CACHE_MIN_BYTES", 0)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("mine")
    monkeypatch.setenv("CHARLM_CACHE", str(blocker))
    c = load_corpus(texts)
    assert not isinstance(c.ids, np.memmap) and c.vocab.decode(c.ids) == load_corpus(texts, cache=False).vocab.decode(
        load_corpus(texts, cache=False).ids)
    assert "CHARLM_CACHE" in c.notice and str(blocker) in c.notice and ".tmp" not in c.notice
    r = CliRunner().invoke(main, ["train", str(texts), "--out", str(tmp_path / "run"), "-q",
                                  *[x for o in tiny_overrides(**{"train.max_steps": 2}) for x in ("--set", o)]])
    assert r.exit_code == 0, r.output
    assert r.output.count("the corpus cache") == 1 and "CHARLM_CACHE" in r.output and "Traceback" not in r.output
    assert blocker.read_text() == "mine"


@pytest.mark.parametrize("errno_, where", [(28, "write"), (13, "open"), (30, "open")])
def test_a_full_or_read_only_cache_trains_from_memory(store, texts, monkeypatch, errno_, where):
    def fail(*a, **k):
        raise OSError(errno_, os.strerror(errno_), str(store / ".x.tmp"))

    monkeypatch.setattr(cache.EntryWriter, "write" if where == "write" else "__init__", fail)
    c = load_corpus(texts)
    assert c.vocab.decode(c.ids).startswith("hero hell")
    assert "CHARLM_CACHE" in c.notice and os.strerror(errno_) in c.notice and ".tmp" not in c.notice
    assert entry_files(store) == [] and leftovers(store) == []


def test_an_unusable_cache_and_too_little_memory_is_one_line_naming_charlm_cache(store, texts, monkeypatch):
    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache.EntryWriter, "write", full)
    monkeypatch.setattr(data, "available_memory", lambda: 100)
    with pytest.raises(CorpusError, match="CHARLM_CACHE") as e:
        load_corpus(texts)
    assert "\n" not in str(e.value) and ".tmp" not in str(e.value)


def test_clear_deletes_only_what_charlm_wrote(store, texts):
    """CHARLM_CACHE pointed at a directory that also holds the user's files."""
    load_corpus(texts)
    mine = {"notes.json": "{}", "data.ids": "123", ".hidden.tmp": "x", f"{'0' * 32}.json": '{"key": "x"}',
            f"{'1' * 32}.corpus": "not a cache entry", f".{'2' * 32}.corpus.{'3' * 12}.tmp": "not ours either",
            "sub/a.corpus": "x"}
    for name, text in mine.items():
        (store / name).parent.mkdir(exist_ok=True)
        (store / name).write_text(text)
    r = CliRunner().invoke(main, ["cache", "--clear"])
    assert r.exit_code == 0 and "removed 1 file" in r.output, r.output
    assert {str(p.relative_to(store)) for p in store.rglob("*") if p.is_file()} == set(mine)
    listed = json.loads(CliRunner().invoke(main, ["cache", "--json"]).output)
    assert listed["entries"] == []
    load_corpus(texts)  # a sweep leaves them too
    assert all((store / name).read_text() == text for name, text in mine.items())


def test_entries_of_the_format_before_are_recognised_and_cleared(store, texts):
    key, ids = "c" * 32, bytes(range(8))
    store.mkdir(exist_ok=True)
    (store / f"{key}.ids").write_bytes(ids)
    (store / f"{key}.json").write_text(json.dumps({
        "format": 1, "key": key, "dtype": "|u1", "length": 8, "ids_sha256": cache.hashlib.sha256(ids).hexdigest(),
        "vocab": "abcdefgh", "fingerprint": {"path": "old"}}))
    assert "format before" in CliRunner().invoke(main, ["cache"]).output
    r = CliRunner().invoke(main, ["cache", "--clear"])
    assert "removed 2 files" in r.output and list(store.iterdir()) == []


def forge(path, change):
    """Rewrite an entry's metadata with ``change(meta_text)`` and its checksum recomputed, so only
    the metadata's own checks can catch it."""
    raw = path.read_bytes()
    header, meta = cache.read_header(raw)
    ids = raw[cache.HEADER_BYTES : cache.HEADER_BYTES + header.ids_bytes]
    body = change(json.dumps(meta)).encode()
    path.write_bytes(cache._header(header.key, len(ids), body) + ids + body)


@pytest.mark.parametrize("change", [lambda t: t.replace('"summary": ', '"summary": ' + "[" * 100_000 + "]" * 100_000 + ', "x": '),
                                    lambda t: t.replace('"chars": ', '"chars": NaN, "y": ')],
                         ids=["nested past the parser", "NaN"])
def test_forged_metadata_is_damage_the_cache_commands_show_and_clear(store, texts, change):
    good = load_corpus(texts)
    [path] = entry_files(store)
    forge(path, change)
    listed = CliRunner().invoke(main, ["cache"])
    assert listed.exit_code == 0 and "damaged" in listed.output, listed.output
    as_json = CliRunner().invoke(main, ["cache", "--json"])
    assert as_json.exit_code == 0 and json.loads(as_json.output)["other"][0]["kind"] == "damaged"
    again = load_corpus(texts)  # rebuilt
    assert again.fingerprint == good.fingerprint
    forge(entry_files(store)[0], change)
    assert CliRunner().invoke(main, ["cache", "--clear"]).exit_code == 0 and entry_files(store) == []


def test_a_directory_with_skipped_files_is_served_from_the_cache(store, texts, monkeypatch):
    (texts / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    first = load_corpus(texts)
    assert "binary 1" in first.summary
    no_decoding(monkeypatch)
    again = load_corpus(texts)
    assert isinstance(again.ids, np.memmap) and again.summary == first.summary
    assert again.fingerprint == first.fingerprint


def test_clear_never_deletes_a_users_file_that_looks_like_charlms(store, texts):
    load_corpus(texts)
    key = "d" * 32
    mine = {f"{'e' * 32}.corpus": b"\0" * 300,  # starts with zeros, not charlm's header
            f"{key}.ids": b"my precious data",
            f"{key}.json": json.dumps({"key": key, "format": 1}).encode(),  # charlm's old format? not whole
            f".{'f' * 32}.corpus.{'1' * 12}.tmp": b""}
    for name, raw in mine.items():
        (store / name).write_bytes(raw)
    r = CliRunner().invoke(main, ["cache", "--clear"])
    assert r.exit_code == 0 and "removed 1 file" in r.output, r.output
    assert {p.name: p.read_bytes() for p in store.iterdir()} == mine


def test_the_cache_command_when_the_cache_is_off(monkeypatch):
    monkeypatch.setenv("CHARLM_CACHE", "off")
    for args in (["cache"], ["cache", "--clear"]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 0 and "the corpus cache is off" in r.output and "None" not in r.output
    listed = json.loads(CliRunner().invoke(main, ["cache", "--json"]).output)
    cleared = json.loads(CliRunner().invoke(main, ["cache", "--clear", "--json"]).output)
    assert listed == {"directory": None, "entries": [], "other": []}
    assert cleared == {"directory": None, "removed_files": 0, "freed_bytes": 0}


def test_cache_json_of_a_corpus_whose_names_are_not_utf8_is_valid_utf8(store, tmp_path):
    d = tmp_path / "odd"
    d.mkdir()
    name = os.fsdecode(b"\xff-notes.txt")
    (d / name).write_text("hello world " * 300)
    load_corpus(d)
    r = CliRunner().invoke(main, ["cache", "--json"])
    raw = r.stdout_bytes if hasattr(r, "stdout_bytes") else r.output.encode()
    assert json.loads(raw.decode("utf-8"))["entries"][0]["corpus"]["files"] == 1
