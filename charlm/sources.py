"""Which files a corpus is made of: the paths a user names, directories walked recursively in
a stable order, ``--include``/``--exclude`` globs, and what was left out and why.

Choices (docs/commands.md, "Corpora: files and directories"):
- A named file is read whatever its name; a problem with it is an error. A directory is
  walked recursively and every regular file in it is a candidate; a candidate that cannot be
  read, is empty, or is not UTF-8 text (a NUL byte, an invalid sequence) is skipped, not an
  error, and the summary line names it.
- Names starting with "." (``.git``, ``.venv``, editor files) are not entered or read.
- Symbolic links are followed; a directory reached twice (a link loop, or two links to one
  place) is read once.
- Order: the paths as given; inside a directory, sorted by the path relative to it.
- Globs match that relative path with ``fnmatch`` (``*`` also crosses "/", so ``*.py``
  matches ``pkg/sub/mod.py``); with ``--include`` a file must match one, and ``--exclude``
  drops any file it matches, and a directory whose contents it matches as a whole
  (``tests/*``) is not entered. They filter directory members only, never a named file.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from .errors import CorpusError
from .memory import format_bytes


@dataclass(frozen=True)
class CorpusSource:
    """What the user named: ``paths`` (files and directories) and the globs that filter
    directory members."""

    paths: tuple[str, ...]
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def of(cls, spec) -> CorpusSource:
        """A ``CorpusSource`` from itself, one path, or a list of paths."""
        if isinstance(spec, CorpusSource):
            return spec
        if isinstance(spec, (str, os.PathLike)):
            return cls((str(spec),))
        return cls(tuple(str(p) for p in spec))

    def to_fingerprint(self) -> dict:
        """The fields a corpus fingerprint keeps of its source, so a checkpoint can find its text again."""
        return {"paths": list(self.paths), **({"include": list(self.include)} if self.include else {}),
                **({"exclude": list(self.exclude)} if self.exclude else {})}

    @classmethod
    def from_fingerprint(cls, fp: dict) -> CorpusSource | None:
        """The source a fingerprint names (one written before several paths: its "path"), or None."""
        paths = fp.get("paths") or ([fp["path"]] if isinstance(fp.get("path"), str) else None)
        if not paths:
            return None
        return cls(tuple(map(str, paths)), tuple(fp.get("include", ())), tuple(fp.get("exclude", ())))

    @property
    def label(self) -> str:
        """How messages and the fingerprint name the corpus: its paths, space-separated (the
        first three and how many more, for a shell glob's hundreds)."""
        more = len(self.paths) - 3
        return " ".join(self.paths[:3]) + (f" and {more:,} more" if more > 0 else "")

    def excludes_dir(self, name: str) -> bool:
        """A directory whose whole contents --exclude drops ('tests/*' drops 'tests'): not entered."""
        return any(fnmatchcase(name + "/", g) for g in self.exclude)

    def wants(self, name: str) -> bool:
        if self.include and not any(fnmatchcase(name, g) for g in self.include):
            return False
        return not any(fnmatchcase(name, g) for g in self.exclude)


@dataclass
class Member:
    """One file to read: ``name`` is its path relative to the directory it was found under,
    or the path as given for a named file (``named``: a problem with it is an error)."""

    path: Path
    name: str
    named: bool


@dataclass
class Listing:
    """The files of a corpus in reading order, and (name, reason) for each left out."""

    members: list[Member]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def list_files(source: CorpusSource) -> Listing:
    listing = Listing([])
    seen_dirs: set[tuple[int, int]] = set()
    for raw in source.paths:
        p = Path(raw)
        try:
            st = p.stat()
        except FileNotFoundError:
            raise CorpusError(f"{raw}: no such file or directory") from None
        except OSError as e:
            raise CorpusError(f"{raw}: cannot read: {e.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            found: list[Member] = []
            _walk(p, "", source, found, listing.skipped, seen_dirs)
            listing.members += sorted(found, key=lambda m: m.name)
        elif stat.S_ISREG(st.st_mode):
            listing.members.append(Member(p, raw, named=True))
        else:
            raise CorpusError(f"{raw}: not a regular file")
    return listing


def _walk(d: Path, prefix: str, source: CorpusSource, found: list, skipped: list, seen: set) -> None:
    """Depth-first over ``d``; ``prefix`` is d's path relative to the named directory."""
    try:
        st = d.stat()
        if (st.st_dev, st.st_ino) in seen:
            skipped.append((prefix.rstrip("/") or str(d), "read already (a directory reached twice, by a link)"))
            return
        seen.add((st.st_dev, st.st_ino))
        entries = sorted(os.scandir(d), key=lambda e: e.name)
    except OSError as e:
        skipped.append((prefix.rstrip("/") or str(d), f"unreadable ({e.strerror})"))
        return
    for e in entries:
        name = prefix + e.name
        if e.is_dir() and source.excludes_dir(name):
            continue
        if e.name.startswith("."):
            skipped.append((name, "hidden"))
            continue
        try:
            st = os.stat(e.path)  # follows links
        except FileNotFoundError:
            skipped.append((name, "broken symbolic link"))
            continue
        except OSError as err:
            skipped.append((name, f"unreadable ({err.strerror})"))
            continue
        if stat.S_ISDIR(st.st_mode):
            _walk(Path(e.path), name + "/", source, found, skipped, seen)
        elif not source.wants(name):
            continue
        elif stat.S_ISREG(st.st_mode):
            found.append(Member(Path(e.path), name, named=False))
        else:
            skipped.append((name, "not a regular file"))


def describe_listing(source: CorpusSource, files: int, nbytes: int, skipped: list[tuple[str, str]]) -> str:
    """One line: what was read and what was skipped."""
    globs = "".join(f" --include {short(g, 20)}" for g in source.include) + \
        "".join(f" --exclude {short(g, 20)}" for g in source.exclude)
    line = f"corpus: read {files:,} file{'s' * (files != 1)} ({format_bytes(nbytes)}) from {source.label}{globs}"
    return line + (f"; {describe_skipped(skipped)}" if skipped else "")


def describe_skipped(skipped: list[tuple[str, str]], show: int = 3) -> str:
    """'skipped 5 (binary 3, hidden 2: a.png, b.png, .git, ...)': how many of each kind, the first names."""
    kinds = Counter(reason.split(" (")[0] for _, reason in skipped)
    names = ", ".join(short(n, 40) for n, _ in skipped[:show]) + (", ..." if len(skipped) > show else "")
    return f"skipped {len(skipped):,} ({', '.join(f'{k} {v:,}' for k, v in kinds.most_common())}: {names})"


def short(s: str, n: int = 60) -> str:
    """At most n characters of a user-supplied name."""
    return s if len(s) <= n else s[: n - 3] + "..."
