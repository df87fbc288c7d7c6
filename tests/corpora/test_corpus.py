import numpy as np
import pytest

from charlm.errors import CorpusError
from charlm.text.batches import Batches, eval_windows
from charlm.text.corpus import load_corpus, split


def test_load_file_and_directory_in_sorted_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.txt").write_text("world\n", encoding="utf-8")
    (tmp_path / "d" / "a.txt").write_text("hello ", encoding="utf-8")
    (tmp_path / "d" / "skip.bin").write_bytes(b"\x00\x01")
    c = load_corpus("d")
    assert c.vocab.decode(c.ids) == "hello \nworld\n"  # a newline joins a file that lacks one to the next
    assert c.ids.dtype == np.uint8
    assert c.fingerprint["files"] == 2
    assert c.summary == "corpus: read 2 files (12 bytes) from d; skipped 1 (binary 1: skip.bin)"


def test_crlf_and_multibyte_kept(tmp_path):
    p = tmp_path / "x.txt"
    p.write_bytes("line one\r\nzwei – drei 😀\r\n".encode())
    c = load_corpus(p)
    assert c.vocab.decode(c.ids) == "line one\r\nzwei – drei 😀\r\n"
    assert "\r" in c.vocab.chars


def test_chunk_boundaries_split_multibyte_characters(tmp_path, monkeypatch):
    import charlm.text.corpus as data

    monkeypatch.setattr(data, "CHUNK_BYTES", 7)
    text = "ab😀cdé한국어" * 20
    p = tmp_path / "x.txt"
    p.write_text(text, encoding="utf-8")
    c = load_corpus(p)
    assert c.vocab.decode(c.ids) == text


def _write(d, name, data):
    p = d / name
    if data is None:
        p.mkdir()
    elif data is not False:
        p.write_bytes(data)
    return p


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("missing.txt", False, "no such file"),
        ("emptydir", None, "no UTF-8 text files to read"),
        ("e.txt", b"", "empty"),
        ("l.txt", "caf\xe9 ok".encode("latin-1"), "not UTF-8.*offset 3"),
        ("n.txt", b"abc\x00def", "binary.*offset 3"),
    ],
)
def test_bad_corpus_errors_name_the_file(tmp_path, name, data, message):
    path = _write(tmp_path, name, data)
    with pytest.raises(CorpusError, match=message) as e:
        load_corpus(path)
    assert str(path.name) in str(e.value)


def test_split_takes_last_fraction():
    ids = np.arange(100, dtype=np.uint8)
    tr, va = split(ids, 0.1)
    assert len(tr) == 90 and va[0] == 90 and va[-1] == 99


def test_batches_are_contiguous_streams():
    ids = np.arange(200) % 256
    b = Batches(ids.astype(np.uint8), batch_size=4, seq_length=5)
    stream_len = 50
    x0, y0 = b.window(0)
    x1, _ = b.window(1)
    assert x0.shape == (5, 4)
    for s in range(4):
        assert list(x0[:, s]) == list(range(s * stream_len, s * stream_len + 5))
        assert list(y0[:, s]) == list(range(s * stream_len + 1, s * stream_len + 6))
        assert x1[0, s] == x0[-1, s] + 1  # stream s continues in the next window
    assert b.num_windows == (stream_len - 1) // 5


def test_corpus_too_short_says_how_long():
    with pytest.raises(CorpusError, match="needs at least 204"):
        Batches(np.zeros(100, np.uint8), batch_size=4, seq_length=50)


def test_eval_windows_cover_the_split():
    ids = np.arange(1001) % 200
    seen = []
    for x, y, _first in eval_windows(ids, batch_size=7, seq_length=10):
        assert (y == (x + 1) % 200).all()
        seen.extend(x.ravel().tolist())
    assert len(seen) >= 1000 - 7
