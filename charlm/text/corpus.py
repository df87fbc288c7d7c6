"""Corpus loading: text files to token ids, the train/validation split.

Shape letters: N corpus length. Which files a corpus is made of: sources.py; the encoded-corpus
cache: cache.py; how training reads the ids in windows: batches.py.

Which files a corpus is made of: sources.py. Loading is two vectorised passes over byte
chunks (count code points, then encode), so its cost is linear in the files' size and its peak
memory is the 1- or 2-byte token array plus one chunk; the text is never held as a Python
string whole.
"""

from __future__ import annotations

import codecs
import errno
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CorpusError
from ..files import open_to_read
from ..system import available_memory, format_bytes
from . import cache as encoded
from .sources import CorpusSource, Listing, Member, describe_listing, describe_skipped, list_files
from .vocab import MAX_CODE_POINT, Vocab, code_points, describe_chars

CHUNK_BYTES = 2 << 20  # temporaries per chunk are ~10x its size: keep them small


# Between two files whose first does not end with a newline, one is added, so a file's last
# line never runs into the next file's first (what `cat` would not do). Nothing else marks a
# boundary: a model of a source tree learns where files start from their own first lines.
FILE_SEPARATOR = "\n"


class UnreadableFile(CorpusError):
    """A file that cannot be read as text; ``kind`` says why (binary, not UTF-8, unreadable,
    empty). A directory's member with one is skipped; a named file's is the error."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


def _decoded_chunks(path: Path, hasher=None):
    """Yield the text of ``path`` in chunks; an ``UnreadableFile`` at the first byte that is
    not text. ``hasher`` (a hashlib object) is fed the raw bytes."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0
    try:
        f = open_to_read(path)
    except OSError as e:
        raise UnreadableFile(f"{path}: cannot read: {e.strerror}", "unreadable") from None
    with f:
        while True:
            try:
                raw = f.read(CHUNK_BYTES)
            except OSError as e:
                raise UnreadableFile(f"{path}: cannot read: {e.strerror}", "unreadable") from None
            if raw is None:  # opened without blocking, and a read would wait (files.open_to_read)
                raise UnreadableFile(f"{path}: cannot read: a read would wait for data", "unreadable")
            if hasher is not None:
                hasher.update(raw)
            nul = raw.find(b"\0")
            if nul >= 0:
                raise UnreadableFile(
                    f"{path}: looks like a binary file (NUL byte at offset {offset + nul}); "
                    "charlm trains on UTF-8 text", "binary"
                )
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                at = offset - pending + e.start
                raise UnreadableFile(
                    f"{path}: not UTF-8 text: byte 0x{e.object[e.start]:02X} at offset {at} "
                    f"({e.reason}); convert it first, e.g. iconv -f latin1 -t utf-8", "not UTF-8"
                ) from None
            offset += len(raw)
            if text:
                yield text
            if not raw:
                return


@dataclass
class Corpus:
    """A whole corpus as token ids. ids (N,) uint8/uint16.

    ``fingerprint``: its path(s), length in characters, number of files and a SHA-256 (of the
    file's bytes for one file; of every file's name and SHA-256 for several): what a checkpoint
    records to know its data. ``summary``: the line that says which files were read and which
    skipped, when a directory or several paths were named ("" for one file).
    """

    ids: np.ndarray
    vocab: Vocab
    fingerprint: dict
    summary: str = ""
    counts: np.ndarray | None = None  # (V,) occurrences of each id, counted while encoding
    notice: str = ""  # a line for the user: the cache could not take the corpus, so it is in memory

    def __len__(self) -> int:
        return len(self.ids)


def describe_fingerprint(fp: dict) -> str:
    return f"{fp.get('path', '?')} ({fp.get('chars', 0):,} characters, sha256 {str(fp.get('sha256', '?'))[:12]})"


@dataclass
class _Scan:
    """One file's first pass: its characters, bytes, SHA-256, code-point counts (when the
    vocabulary is built) and whether it ends with a newline."""

    chars: int
    nbytes: int
    sha256: str
    counts: np.ndarray | None
    ends_line: bool


def _scan(path: Path, count: bool) -> _Scan:
    hasher, n, last = _CountingHash(), 0, ""
    counts = np.zeros(128, np.int64) if count else None
    for text in _decoded_chunks(path, hasher):
        n += len(text)
        last = text[-1]
        if count:
            c = np.bincount(code_points(text))
            if len(c) > len(counts):
                counts = np.concatenate([counts, np.zeros(len(c) - len(counts), np.int64)])
            counts[: len(c)] += c
    if n == 0:
        raise UnreadableFile(f"{path}: file is empty", "empty")
    return _Scan(n, hasher.nbytes, hasher.hexdigest(), counts, last == FILE_SEPARATOR)


class _CountingHash:
    """A SHA-256 that also counts the bytes it was fed: a file's size as it was read."""

    def __init__(self):
        self.h, self.nbytes = hashlib.sha256(), 0

    def update(self, raw: bytes) -> None:
        self.h.update(raw)
        self.nbytes += len(raw)

    def hexdigest(self) -> str:
        return self.h.hexdigest()


def _readable(source: CorpusSource, listing: Listing, count: bool):
    """The corpus's files that are text, their scans, and (name, reason) for every file left out."""
    members, scans, skipped = [], [], list(listing.skipped)
    for m in listing.members:
        try:
            scans.append(_scan(m.path, count))
        except UnreadableFile as e:
            if m.named:
                raise
            skipped.append((m.name, e.kind))
            continue
        members.append(m)
    if not members:
        raise CorpusError(f"{source.label}: no UTF-8 text files to read"
                          + (f"; {describe_skipped(skipped)}" if skipped else ""))
    return members, scans, skipped


def load_corpus(spec, vocab: Vocab | None = None, cache: bool = True) -> Corpus:
    """Read UTF-8 text into token ids: ``spec`` is a path, a list of paths or a
    ``CorpusSource`` (sources.py: which files, in which order). Builds the vocabulary unless
    one is given. A corpus of CACHE_MIN_BYTES or more is encoded once into the cache
    (cache.py) and its ids are a read-only memory map of the cached file; ``cache=False``
    always decodes, into memory. Where the cache cannot take the corpus (not a directory,
    read-only, full), it is encoded into memory when it fits, and ``Corpus.notice`` says so."""
    source = CorpusSource.of(spec)
    listing = list_files(source)
    entry, given = None, vocab
    if cache and encoded.cache_dir() is not None:
        encoded.sweep(encoded.cache_dir())
        # A resumed run names the vocabulary its corpus was first encoded in: that entry serves it.
        for v in (None, vocab) if vocab is not None else (None,):
            entry = _cache_entry(source, listing, v)
            hit = entry.load([m.path for m in listing.members]) if entry is not None else None
            if hit is not None and (vocab is None or hit[1]["vocab"] == "".join(vocab.chars)):
                ids, meta = hit
                return Corpus(ids, vocab or Vocab(meta["vocab"]), meta["fingerprint"], meta["summary"],
                              np.array(meta["counts"], np.int64))
    members, scans, skipped = _readable(source, listing, count=vocab is None)
    joins = [not s.ends_line for s in scans[:-1]] + [False]  # a FILE_SEPARATOR after this file
    total = sum(s.chars for s in scans) + sum(joins)
    ids_counts = None  # each id's occurrences: from the first pass's counts, or counted while encoding
    if vocab is None:
        counts = np.zeros(MAX_CODE_POINT + 1, dtype=np.int64)
        for s in scans:
            counts[: len(s.counts)] += s.counts
        counts[ord(FILE_SEPARATOR)] += sum(joins)
        vocab = Vocab.from_counts(counts)
        ids_counts = counts[[ord(c) for c in vocab.chars]]
    one = len(members) == 1 and members[0].named
    digest = scans[0].sha256 if one else hashlib.sha256(
        "".join(f"{m.name}\0{s.sha256}\n" for m, s in zip(members, scans)).encode("utf-8", "surrogateescape")
    ).hexdigest()
    fingerprint = {"path": source.label, "chars": total, "sha256": digest, "files": len(members),
                   **source.to_fingerprint()}
    summary = "" if one and not skipped else describe_listing(source, len(members), sum(s.nbytes for s in scans),
                                                              skipped)
    counted = ids_counts is None
    if counted:
        ids_counts = np.zeros(len(vocab), np.int64)

    def chunks():  # the second pass; a change since the first is an error, so the fingerprint is the text's
        it = _encoded(source, members, scans, joins, vocab)
        return _counted(it, ids_counts) if counted else it

    notice = ""
    recorded = _records(listing, members, scans) if entry is not None else None
    if recorded is None:
        entry = None  # a file that cannot be hashed cannot prove an entry is its own: no entry
    if entry is not None:
        try:
            with entry.writer() as w:
                for chunk in chunks():
                    w.write(chunk)
                    if w.length > total:
                        break
                if w.length == total:
                    ids = w.commit(vocab.dtype, {
                        "vocab": "".join(vocab.chars), "fingerprint": fingerprint, "summary": summary,
                        "counts": ids_counts.tolist(), "files": recorded,
                        "source": encoded.source_id(source.paths, source.include, source.exclude,
                                                    None if given is None else "".join(given.chars))})
                    return Corpus(ids=ids, vocab=vocab, fingerprint=fingerprint, summary=summary, counts=ids_counts)
            raise CorpusError(f"{source.label}: a file changed while it was being read; run again")
        except OSError as e:  # the cache's: reading the corpus raises CorpusError
            notice = _in_memory_instead(entry.directory, e, total * vocab.dtype.itemsize)
            if counted:
                ids_counts[:] = 0
    ids = np.empty(total, dtype=vocab.dtype)
    at = 0
    for chunk in chunks():
        if at + len(chunk) > total:
            raise CorpusError(f"{source.label}: a file changed while it was being read; run again")
        ids[at : at + len(chunk)] = chunk
        at += len(chunk)
    if at != total:
        raise CorpusError(f"{source.label}: a file changed while it was being read; run again")
    return Corpus(ids=ids, vocab=vocab, fingerprint=fingerprint, summary=summary, counts=ids_counts, notice=notice)


def _records(listing: Listing, members: list[Member], scans: list[_Scan]) -> list | None:
    """[name, size, SHA-256] of every file of the listing, read or skipped (a skipped file that
    changes may change the corpus too), as a cache entry records them; None when one cannot be
    read."""
    read = {id(m): s for m, s in zip(members, scans)}
    out = []
    for m in listing.members:
        s = read.get(id(m))
        rec = [m.name, s.nbytes, s.sha256] if s is not None else encoded.file_record(m.name, m.path)
        if rec is None:
            return None
        out.append(rec)
    return out


def _in_memory_instead(directory: Path, error: OSError, nbytes: int) -> str:
    """The one line that says the cache could not take the corpus and it is encoded in memory;
    a ``CorpusError`` saying what to do when memory cannot hold it either."""
    why = "it is not a directory" if error.errno in (errno.EEXIST, errno.ENOTDIR) else error.strerror or str(error)
    avail = available_memory()
    if avail is not None and nbytes > avail:
        raise CorpusError(f"the corpus cache {directory} cannot take this corpus ({why}), and its "
                          f"{format_bytes(nbytes)} of ids do not fit in the {format_bytes(avail)} of memory available: "
                          f"point CHARLM_CACHE at a directory with {format_bytes(nbytes)} free")
    return (f"the corpus cache {directory} cannot take this corpus ({why}); it is encoded in memory this time "
            f"({format_bytes(nbytes)}). Point CHARLM_CACHE at a writable directory, or set CHARLM_CACHE=off")


def _counted(chunks, counts: np.ndarray):
    """The chunks of ids unchanged, adding each id's occurrences to ``counts`` on the way."""
    for chunk in chunks:
        counts += np.bincount(chunk, minlength=len(counts))
        yield chunk


def _encoded(source: CorpusSource, members: list[Member], scans: list[_Scan], joins: list[bool], vocab: Vocab):
    """The second pass: the ids of each file's chunks, with the separators, in order. A file
    whose bytes are not the first pass's (its SHA-256) is a ``CorpusError``."""
    sep = vocab.ids_of_code_points(code_points(FILE_SEPARATOR))
    if any(joins) and sep[0] < 0:
        raise CorpusError(f"{source.label}: its files are joined with a newline, which is outside the "
                          "checkpoint's vocabulary")
    for m, scan, join in zip(members, scans, joins):
        hasher = hashlib.sha256()
        for text in _decoded_chunks(m.path, hasher):
            chunk = vocab.ids_of_code_points(code_points(text))
            if (chunk < 0).any():
                raise CorpusError(
                    f"{m.path}: has characters outside the checkpoint's vocabulary: "
                    f"{describe_chars(vocab.unknown(text))}"
                )
            yield chunk.astype(vocab.dtype, copy=False)
        if hasher.hexdigest() != scan.sha256:
            raise CorpusError(f"{m.path}: the file changed while it was being read; run again")
        if join:
            yield sep.astype(vocab.dtype)


def _cache_entry(source: CorpusSource, listing: Listing, vocab: Vocab | None) -> encoded.Entry | None:
    """The cache entry of this corpus in this vocabulary, when it is large enough to cache."""
    directory = encoded.cache_dir()
    if directory is None:
        return None
    files = []
    for m in listing.members:
        try:
            st = m.path.stat()
        except OSError:
            return None
        files.append([m.name, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev])
    if sum(f[1] for f in files) < encoded.CACHE_MIN_BYTES:
        return None
    return encoded.Entry(directory, encoded.entry_key({
        "paths": source.paths, "include": source.include, "exclude": source.exclude, "files": files,
        "skipped": listing.skipped, "vocab": None if vocab is None else "".join(vocab.chars)}))


def read_text(spec) -> str:
    """A corpus as one string, for searching it (``novelty``): the same files, joined the same
    way, as ``load_corpus`` reads."""
    source = CorpusSource.of(spec)
    members, scans, _ = _readable(source, list_files(source), count=False)
    texts = ["".join(_decoded_chunks(m.path)) for m in members]
    return "".join(t + FILE_SEPARATOR * (not s.ends_line and i < len(texts) - 1)
                   for i, (t, s) in enumerate(zip(texts, scans)))


def split_sizes(n: int, val_fraction: float) -> tuple[int, int]:
    """(training, validation) characters of a corpus of ``n``: the last ``val_fraction`` of it,
    rounded, is validation."""
    n_val = int(round(n * val_fraction))
    return n - n_val, n_val


def split(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The last ``val_fraction`` of the characters is validation: (train (N1,), val (N2,)) views."""
    n_train, _ = split_sizes(len(ids), val_fraction)
    return ids[:n_train], ids[n_train:]
