"""The encoded-corpus cache: a corpus's ids, encoded once into a file that later runs map
instead of decoding the text again.

    <cache dir>/<key>.ids    the ids, raw (uint8 or uint16), in corpus order
    <cache dir>/<key>.json   what they are: the format, the key, the vocabulary, the length,
                             the corpus's fingerprint and summary line, the ids file's SHA-256

The directory is $CHARLM_CACHE, else $XDG_CACHE_HOME/charlm/corpora, else
~/.cache/charlm/corpora; CHARLM_CACHE=off turns the cache off. ``charlm cache`` lists it and
``charlm cache --clear`` empties it. Corpora under CACHE_MIN_BYTES are not cached: they encode
in well under a second.

The key is a SHA-256 of what names the text without reading it: the paths and globs, every
file's name, size, modification time and inode, what the listing skipped, and the vocabulary
the ids are in (their own, or a checkpoint's). A changed file changes its key, so a stale entry
is never found. An entry that is found is checked before it is trusted: its metadata parses and
names this key, and the ids file has the recorded length and SHA-256 (read in chunks, so the
check leaves nothing resident). A damaged entry is deleted and the corpus encoded again.
Entries are written to temporary files and renamed into place, metadata last, so a killed run
leaves no entry that looks whole. Processes on one machine that map the same entry share its
pages.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .files import atomic_write_text, fsync_dir, temporary_name

FORMAT = 1
CACHE_MIN_BYTES = 16 << 20
HASH_CHUNK = 8 << 20


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
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode("utf-8", "surrogateescape")).hexdigest()[:32]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class Entry:
    """One cache entry's two files."""

    def __init__(self, directory: Path, key: str):
        self.key = key
        self.ids_path = directory / f"{key}.ids"
        self.meta_path = directory / f"{key}.json"

    def load(self) -> tuple[np.memmap, dict] | None:
        """(the ids mapped read-only, the metadata), or None when there is no whole, intact
        entry (a damaged one is removed)."""
        if not self.meta_path.is_file():
            return None
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
            dtype, n = np.dtype(meta["dtype"]), int(meta["length"])
            ok = (meta.get("format") == FORMAT and meta.get("key") == self.key
                  and self.ids_path.stat().st_size == n * dtype.itemsize
                  and file_sha256(self.ids_path) == meta["ids_sha256"])
        except (OSError, ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            self.remove()
            return None
        return np.memmap(self.ids_path, dtype=dtype, mode="r", shape=(n,)), meta

    def remove(self) -> None:
        for p in (self.meta_path, self.ids_path):
            try:
                p.unlink()
            except OSError:
                pass

    def writer(self) -> IdsWriter:
        self.ids_path.parent.mkdir(parents=True, exist_ok=True)
        return IdsWriter(self)


class IdsWriter:
    """Appends ids to a temporary file; ``commit(meta)`` renames it into place and writes the
    metadata, then maps the ids. Leaving the ``with`` block without a commit deletes it."""

    def __init__(self, entry: Entry):
        self.entry, self.tmp = entry, temporary_name(entry.ids_path)
        self.f = open(self.tmp, "xb")
        self.hasher, self.length = hashlib.sha256(), 0

    def write(self, ids: np.ndarray) -> None:
        raw = np.ascontiguousarray(ids).tobytes()
        self.f.write(raw)
        self.hasher.update(raw)
        self.length += len(ids)

    def commit(self, dtype, meta: dict) -> np.memmap:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, self.entry.ids_path)
        fsync_dir(self.entry.ids_path.parent)
        meta = {**meta, "format": FORMAT, "key": self.entry.key, "dtype": np.dtype(dtype).str,
                "length": self.length, "ids_sha256": self.hasher.hexdigest()}
        atomic_write_text(self.entry.meta_path, json.dumps(meta))
        return np.memmap(self.entry.ids_path, dtype=dtype, mode="r", shape=(self.length,))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if not self.f.closed:
            self.f.close()
            try:
                os.unlink(self.tmp)
            except OSError:
                pass


def entries(directory: Path | None = None) -> list[tuple[Path, dict | None, int]]:
    """(metadata file, its metadata or None if unreadable, bytes of both files) of every entry."""
    directory = directory or cache_dir()
    if directory is None or not directory.is_dir():
        return []
    out = []
    for meta_path in sorted(directory.glob("*.json")):
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = None
        ids = meta_path.with_suffix(".ids")
        size = meta_path.stat().st_size + (ids.stat().st_size if ids.exists() else 0)
        out.append((meta_path, meta if isinstance(meta, dict) else None, size))
    return out


def clear(directory: Path | None = None) -> tuple[int, int]:
    """Delete every entry and leftover temporary file: (files removed, bytes freed)."""
    directory = directory or cache_dir()
    if directory is None or not directory.is_dir():
        return 0, 0
    n = freed = 0
    for p in list(directory.glob("*.ids")) + list(directory.glob("*.json")) + list(directory.glob(".*.tmp")):
        try:
            size = p.stat().st_size
            p.unlink()
        except OSError:
            continue
        n, freed = n + 1, freed + size
    return n, freed
