"""The encoded-corpus cache: a corpus's ids, encoded once into a file that later runs map
instead of decoding the text again.

    <cache dir>/<key>.corpus    one entry: a header, the ids, then their metadata as JSON

    header (HEADER_BYTES)  MAGIC, the key, the ids' and the metadata's byte counts, the
                           metadata's SHA-256
    ids                    uint8 or uint16, in corpus order
    metadata               the vocabulary, each id's count, the corpus's fingerprint and summary
                           line, each file's name, size and SHA-256, the ids' SHA-256, the
                           source (for replacing an entry of an older version of the same files)

The directory is $CHARLM_CACHE, else $XDG_CACHE_HOME/charlm/corpora, else
~/.cache/charlm/corpora; CHARLM_CACHE=off turns the cache off. Corpora under CACHE_MIN_BYTES are
not cached: they encode in well under a second.

Finding: the key is a SHA-256 of what names the text without reading it (the paths and globs,
every file's name, size, modification time and inode, what the listing skipped, the
vocabulary), so an entry is found without decoding anything. Trusting: a found entry is used
only once every part of it checks: the header, the metadata's checksum and every field it
holds, the ids' SHA-256 and range, and the SHA-256 of every file's bytes as they are now. That
last check is what proves the entry belongs to the text: a file rewritten in place with its
size and time put back has the same key, and is caught there. Hashing is one read of the
text, several times faster than decoding it (docs/commands.md has the numbers). An entry that
fails a check is deleted and the corpus encoded again.

Writing: an entry is written to an unnamed file in the cache directory (O_TMPFILE), which its
writer holds under an exclusive ``flock``, and is named only when whole, then renamed into
place: no reader ever sees half an entry, and a writer killed at any moment leaves nothing.
Where the filesystem has no unnamed files, it is a named temporary beside the entry,
``.<key>.corpus.<random>.tmp``, starting with MAGIC from its first write; a writer killed then
leaves it unlocked, the next use of the cache deletes it (``sweep``), and ``charlm cache``
lists it until then. Committing an entry deletes the entries of older versions of the same
source, so editing a corpus does not grow the cache.

Only files charlm wrote are ever deleted, whatever directory CHARLM_CACHE names: entries and
temporaries are recognised by their name and their first bytes (MAGIC); entries of the format
before (``<key>.ids`` beside ``<key>.json``) by a JSON with every field that format wrote, an
ids file of the size it records, and, before they are deleted, that file's SHA-256.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import fsync_dir, open_to_read, temporary_name

CACHE_MIN_BYTES = 16 << 20
HASH_CHUNK = 8 << 20
MAGIC = b"charlm corpus\n\x00\x02"  # 16 bytes; the last is the format
HEADER = struct.Struct("<16s32sQQ32s")  # magic, key, ids bytes, metadata bytes, metadata SHA-256
HEADER_BYTES = 128  # the ids start here: aligned for any dtype
SUFFIX = ".corpus"
_ENTRY_NAME = re.compile(r"[0-9a-f]{32}\.corpus")
_TEMPORARY_NAME = re.compile(r"\.([0-9a-f]{32})\.corpus\.[0-9a-f]{12}\.tmp")
_OLD_NAME = re.compile(r"([0-9a-f]{32})\.(ids|json)")  # the format before: two files an entry


def cache_dir() -> Path | None:
    """Where entries live; None when CHARLM_CACHE=off."""
    env = os.environ.get("CHARLM_CACHE")
    if env is not None and env.strip().lower() in ("off", "0", "none", ""):
        return None
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "charlm" / "corpora"


def entry_key(description: dict) -> str:
    """The key of an entry: a SHA-256 of ``description`` (JSON with sorted keys)."""
    return _digest(description)[:32]


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode("utf-8", "surrogateescape")).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open_to_read(path) as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
        if chunk is None:  # a read would wait: not a file whose bytes can prove anything
            raise OSError(errno.EAGAIN, "a read would wait for data", str(path))
    return h.hexdigest()


@dataclass(frozen=True)
class Header:
    key: str
    ids_bytes: int
    meta_bytes: int
    meta_sha256: bytes


def entry_bytes(key: str, ids: bytes, meta: dict) -> bytes:
    """A whole entry file's bytes (for tests that forge one; ``EntryWriter`` streams the same)."""
    body = json.dumps(meta).encode("utf-8")
    return _header(key, len(ids), body) + ids + body


def _header(key: str, ids_bytes: int, body: bytes) -> bytes:
    raw = HEADER.pack(MAGIC, key.encode("ascii"), ids_bytes, len(body), hashlib.sha256(body).digest())
    return raw.ljust(HEADER_BYTES, b"\0")


def read_header(raw: bytes) -> tuple[Header, dict]:
    """(the header, the metadata) of an entry's bytes (at least the header and the metadata);
    ``ValueError`` when they are not an intact entry's."""
    if len(raw) < HEADER_BYTES:
        raise ValueError("shorter than a header")
    magic, key, ids_bytes, meta_bytes, meta_sha = HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise ValueError("not a charlm cache entry")
    header = Header(key.decode("ascii", "replace"), ids_bytes, meta_bytes, meta_sha)
    body = bytes(raw[HEADER_BYTES + ids_bytes : HEADER_BYTES + ids_bytes + meta_bytes])
    if len(body) != meta_bytes or hashlib.sha256(body).digest() != meta_sha:
        raise ValueError("metadata checksum")
    return header, _parse(body)


class Entry:
    """One cache entry: ``<key>.corpus`` in ``directory``."""

    def __init__(self, directory: Path, key: str):
        self.directory, self.key = directory, key
        self.path = directory / f"{key}{SUFFIX}"

    def load(self, files: list[Path]) -> tuple[np.memmap, dict] | None:
        """(the ids mapped read-only, the metadata) when the entry is whole, intact and was made
        from ``files`` as their bytes are now; otherwise None, and a failed entry is deleted."""
        try:
            size = self.path.stat().st_size
        except OSError:
            return None
        try:
            header, meta = _read_header_only(self.path, size)
            if header.key != self.key:
                raise ValueError("key")
            dtype, n = _check_meta(meta, header)
            if not _ids_intact(self.path, dtype, header.ids_bytes, meta) or not _files_unchanged(files, meta["files"]):
                raise ValueError("stale or damaged")
            ids = np.memmap(self.path, dtype=dtype, mode="r", offset=HEADER_BYTES, shape=(n,))
        except (OSError, ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError, struct.error):
            # Its name is a hash of this corpus's description: charlm wrote it, whatever its bytes say now.
            try:
                self.path.unlink()
            except OSError:
                pass
            return None
        return ids, meta

    def writer(self) -> EntryWriter:
        """An ``OSError`` when the directory cannot take a file (not a directory, read-only, full)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        return EntryWriter(self)


def _refuse_constant(name: str):
    raise ValueError(f"{name} in the metadata")


def _parse(body: bytes) -> dict:
    """The metadata JSON: NaN and Infinity (not JSON, but Python's parser takes them) refused;
    nesting past the parser's depth is a ValueError like any other damage."""
    try:
        meta = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(meta, dict):
        raise ValueError("not an object")
    return meta


def _read_header_only(path: Path, size: int) -> tuple[Header, dict]:
    """The header and metadata of the entry file at ``path`` (``size`` bytes), without its ids."""
    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES)
        if len(head) < HEADER_BYTES:
            raise ValueError("shorter than a header")
        magic, _, ids_bytes, meta_bytes, _ = HEADER.unpack_from(head)
        if magic != MAGIC:
            raise ValueError("not a charlm cache entry")
        if HEADER_BYTES + ids_bytes + meta_bytes != size:
            raise ValueError("size")
        f.seek(HEADER_BYTES + ids_bytes)
        body = f.read(meta_bytes)
    magic, key, ids_bytes, meta_bytes, meta_sha = HEADER.unpack_from(head)
    if hashlib.sha256(body).digest() != meta_sha:
        raise ValueError("metadata checksum")
    return Header(key.decode("ascii", "replace"), ids_bytes, meta_bytes, meta_sha), _parse(body)


def _is_int(x, lo: int = 0) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= lo


def _is_sha(x) -> bool:
    return isinstance(x, str) and re.fullmatch(r"[0-9a-f]{64}", x) is not None


def _check_meta(meta: dict, header: Header) -> tuple[np.dtype, int]:
    """(the ids' dtype, their count) once every field of ``meta`` has the form charlm writes and
    agrees with the others; ``ValueError`` naming the first that does not."""
    from .vocab import token_dtype  # the vocabulary's module; the cache itself needs no more of it

    vocab, counts, fp, files = meta["vocab"], meta["counts"], meta["fingerprint"], meta["files"]
    if not isinstance(vocab, str) or not vocab or len(set(vocab)) != len(vocab):
        raise ValueError("vocab")
    dtype, n = np.dtype(meta["dtype"]), meta["length"]
    if dtype != token_dtype(len(vocab)) or not _is_int(n) or n * dtype.itemsize != header.ids_bytes:
        raise ValueError("dtype or length")
    if not isinstance(counts, list) or len(counts) != len(vocab) or not all(_is_int(c) for c in counts) \
            or sum(counts) != n:
        raise ValueError("counts")
    if not isinstance(fp, dict) or fp.get("chars") != n or not _is_sha(fp.get("sha256")) \
            or not isinstance(fp.get("path"), str) or not _is_int(fp.get("files"), 1):
        raise ValueError("fingerprint")
    if not isinstance(files, list) or len(files) < fp["files"] or not all(
            isinstance(f, list) and len(f) == 3 and isinstance(f[0], str) and _is_int(f[1]) and _is_sha(f[2])
            for f in files):
        raise ValueError("files")
    if not isinstance(meta["summary"], str) or not _is_sha(meta["ids_sha256"]):
        raise ValueError("summary or ids_sha256")
    return dtype, n


def _ids_intact(path: Path, dtype: np.dtype, nbytes: int, meta: dict) -> bool:
    """The ids' SHA-256 is the recorded one and every id is in the vocabulary: one pass of file
    reads in chunks (not through the mapping, whose pages would stay resident)."""
    h, top, left = hashlib.sha256(), -1, nbytes
    with open(path, "rb") as f:
        f.seek(HEADER_BYTES)
        while left:
            chunk = f.read(min(HASH_CHUNK, left))
            if not chunk:
                return False
            h.update(chunk)
            top = max(top, int(np.frombuffer(chunk, dtype).max()))
            left -= len(chunk)
    return h.hexdigest() == meta["ids_sha256"] and top < len(meta["vocab"])


def _files_unchanged(paths: list[Path], recorded: list) -> bool:
    """Every file's bytes (those the corpus reads and those it skips) are the ones the entry was
    made from."""
    if len(paths) != len(recorded):
        return False
    for p, (_, size, sha) in zip(paths, recorded):
        if p.stat().st_size != size or file_sha256(p) != sha:
            return False
    return True


def file_record(name: str, path: Path) -> list | None:
    """[name, size, SHA-256] of a file, as an entry records it; None when it cannot be read."""
    try:
        return [name, path.stat().st_size, file_sha256(path)]
    except OSError:
        return None


class EntryWriter:
    """Streams ids into a file no one else can see, held under an exclusive lock; ``commit(dtype,
    meta)`` appends the metadata, writes the header and puts the file in place, then maps the
    ids. Leaving the ``with`` block without a commit removes it.

    The file is unnamed (O_TMPFILE) where the filesystem allows: a writer killed at any moment
    leaves nothing at all. It is named only to be renamed into place, whole and still locked.
    Elsewhere it is a named temporary that starts with MAGIC from its first write."""

    def __init__(self, entry: Entry):
        self.entry, self.tmp, self.f = entry, None, None
        try:
            fd = os.open(entry.directory, os.O_TMPFILE | os.O_RDWR, 0o666)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
            self.tmp = temporary_name(entry.path)
            fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        self.f = os.fdopen(fd, "w+b")
        fcntl.flock(fd, fcntl.LOCK_EX)  # while this process lives: a sweep leaves its file alone
        self.f.write(MAGIC.ljust(HEADER_BYTES, b"\0"))  # the real header is written at the commit
        self.f.flush()  # on disk now: a temporary is charlm's from its first bytes
        self.hasher, self.length = hashlib.sha256(), 0

    def write(self, ids: np.ndarray) -> None:
        raw = np.ascontiguousarray(ids).tobytes()
        self.f.write(raw)
        self.hasher.update(raw)
        self.length += len(ids)

    def commit(self, dtype, meta: dict) -> np.memmap:
        dtype = np.dtype(dtype)
        meta = {**meta, "dtype": dtype.str, "length": self.length, "ids_sha256": self.hasher.hexdigest()}
        body = json.dumps(meta).encode("utf-8")
        self.f.write(body)
        self.f.seek(0)
        self.f.write(_header(self.entry.key, self.length * dtype.itemsize, body))
        self.f.flush()
        os.fsync(self.f.fileno())
        if self.tmp is None:  # give the unnamed file a name, then the entry's
            self.tmp = temporary_name(self.entry.path)
            d = os.open(self.entry.directory, os.O_RDONLY)
            try:  # linkat(..., AT_SYMLINK_FOLLOW) on /proc/self/fd: Python calls it when given a dir fd
                os.link(f"/proc/self/fd/{self.f.fileno()}", self.tmp.name, dst_dir_fd=d, follow_symlinks=True)
            finally:
                os.close(d)
        os.replace(self.tmp, self.entry.path)
        self.f.close()  # releases the lock: the file is an entry now
        fsync_dir(self.entry.path.parent)
        _evict_older(self.entry, meta.get("source"))
        return np.memmap(self.entry.path, dtype=dtype, mode="r", offset=HEADER_BYTES, shape=(self.length,))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.f is not None and not self.f.closed:
            self.f.close()
            if self.tmp is not None:
                try:
                    os.unlink(self.tmp)
                except OSError:
                    pass


def _evict_older(entry: Entry, source: str | None) -> None:
    """Delete the other entries made from the same source (older versions of its files)."""
    if source is None:
        return
    for listed in entries(entry.directory):
        if listed.kind == "entry" and listed.path != entry.path and (listed.meta or {}).get("source") == source:
            _remove_if_ours(listed.path)


# ---- listing, sweeping, clearing -----------------------------------------------------------------

@dataclass
class Listed:
    """A file charlm wrote in the cache directory. ``kind``: "entry", "damaged" (an entry file
    that does not check), "writing" (a live writer's temporary), "killed" (a temporary whose
    writer is gone) or "old" (an entry of the format before: ``paths`` holds both its files)."""

    path: Path
    kind: str
    size: int
    meta: dict | None = None
    paths: tuple[Path, ...] = ()


def entries(directory: Path | None = None) -> list[Listed]:
    """Every file of the cache directory that charlm wrote, in name order; nothing else."""
    directory = directory or cache_dir()
    try:
        names = sorted(os.listdir(directory)) if directory is not None else []
    except OSError:
        return []
    out = []
    for name in names:
        path = directory / name
        try:
            if not path.is_file():
                continue
            if _ENTRY_NAME.fullmatch(name):
                out.append(_listed_entry(path))
            elif _TEMPORARY_NAME.fullmatch(name) and _starts_with_magic(path):
                out.append(Listed(path, "writing" if _locked(path) else "killed", path.stat().st_size))
            elif (m := _OLD_NAME.fullmatch(name)) and m.group(2) == "json":
                out.append(_old_entry(directory, m.group(1)))
        except OSError:
            continue
    return [x for x in out if x is not None]


def _listed_entry(path: Path) -> Listed | None:
    """An entry file, "entry" when it is whole and its metadata checks, "damaged" when it starts
    as charlm's entries do but does not; None when it is not charlm's."""
    size = path.stat().st_size
    try:
        header, meta = _read_header_only(path, size)
        if header.key != path.stem:
            raise ValueError("key")
        _check_meta(meta, header)
        return Listed(path, "entry", size, meta)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, struct.error):
        return Listed(path, "damaged", size) if _starts_with_magic(path) else None


OLD_FIELDS = ("format", "key", "dtype", "length", "ids_sha256", "vocab", "fingerprint")


def _old_entry(directory: Path, key: str, verify: bool = False) -> Listed | None:
    """An entry of the format before, when its JSON has every field that format wrote and its ids
    file has the size it records (``verify``: and the SHA-256): then charlm wrote both."""
    meta_path, ids_path = directory / f"{key}.json", directory / f"{key}.ids"
    try:
        meta = _parse(meta_path.read_bytes())
        if meta.get("format") != 1 or meta.get("key") != key or not all(f in meta for f in OLD_FIELDS):
            return None
        if ids_path.stat().st_size != int(meta["length"]) * np.dtype(meta["dtype"]).itemsize:
            return None
        if verify and file_sha256(ids_path) != meta["ids_sha256"]:
            return None
        paths = (meta_path, ids_path)
        return Listed(meta_path, "old", sum(p.stat().st_size for p in paths), meta, paths)
    except (OSError, ValueError, TypeError, UnicodeDecodeError):
        return None


def _starts_with_magic(path: Path) -> bool:
    """charlm's entries and temporaries start with MAGIC from their first write."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def _locked(path: Path) -> bool:
    """Whether a live process holds ``path``'s lock (its writer)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases a lock this process took


def _remove_if_ours(path: Path) -> int:
    """Delete an entry file or a dead writer's temporary when its first bytes say charlm wrote
    it: the bytes freed (0 when it was left)."""
    try:
        size = path.stat().st_size
        if not _starts_with_magic(path):
            return 0
        path.unlink()
        return size
    except OSError:
        return 0


def sweep(directory: Path | None = None) -> None:
    """Delete the temporaries of writers that were killed."""
    for listed in entries(directory):
        if listed.kind == "killed":
            _remove_if_ours(listed.path)


def clear(directory: Path | None = None) -> tuple[int, int]:
    """Delete every entry, damaged entry, entry of the format before (its ids verified) and dead
    writer's temporary: (files removed, bytes freed). A live writer's temporary stays."""
    directory = directory or cache_dir()
    n = freed = 0
    for listed in entries(directory):
        if listed.kind == "writing":
            continue
        if listed.kind == "old":
            old = _old_entry(directory, listed.path.stem, verify=True)
            for p in old.paths if old is not None else ():
                try:
                    size = p.stat().st_size
                    p.unlink()
                    n, freed = n + 1, freed + size
                except OSError:
                    continue
            continue
        size = _remove_if_ours(listed.path)
        if size or not listed.path.exists():
            n, freed = n + 1, freed + size
    return n, freed


def source_id(paths: Iterable[str], include, exclude, vocab: str | None) -> str:
    """What an entry was made from, apart from the files' contents: entries with the same
    source are versions of one corpus, and a new one replaces the others."""
    paths = list(paths)
    return _digest({"paths": [str(Path(p).resolve()) for p in paths], "as_given": paths,
                    "include": list(include), "exclude": list(exclude), "vocab": vocab})
