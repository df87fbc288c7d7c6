"""Which files a corpus is made of: the paths a user names, directories walked recursively in
a stable order, ``--include``/``--exclude`` globs, and what was left out and why.

Choices (docs/commands.md, "Corpora: files and directories"):
- A named file is read whatever its name; a problem with it is an error. A directory is
  walked recursively and every regular file in it is a candidate; a candidate that cannot be
  read, is empty, or is not UTF-8 text (a NUL byte, an invalid sequence) is skipped, not an
  error, and the summary line names it.
- Names starting with "." (``.git``, ``.venv``, editor files) are not entered or read.
- Symbolic links are followed; a directory reached twice (a link loop, or two links to one
  place) is read once, and so is a file (named twice, named beside a directory that holds it,
  or reached through a link): read twice, its second copy could land in the validation split.
- Members that are not regular files (devices, FIFOs, sockets), link loops, unreadable members
  and paths deeper than the system allows are skipped and counted by kind, at any depth.
- Order: the paths as given; inside a directory, sorted by the path relative to it.
- Globs match that relative path with ``fnmatch`` (``*`` also crosses "/", so ``*.py``
  matches ``pkg/sub/mod.py``); with ``--include`` a file must match one, and ``--exclude``
  drops any file it matches, and a directory whose contents it matches as a whole
  (``tests/*``) is not entered. They filter directory members only, never a named file.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from ..errors import CorpusError
from ..system import format_bytes


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
        return " ".join(short(p, 200) for p in self.paths[:3]) + (f" and {more:,} more" if more > 0 else "")

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
    or the path as given for a named file (``named``: a problem with it is an error).
    ``identity``: (device, inode), so a file reached twice is read once."""

    path: Path
    name: str
    named: bool
    identity: tuple[int, int] = (0, 0)


@dataclass
class Listing:
    """The files of a corpus in reading order, (name, reason) for each left out, and the
    names the globs excluded."""

    members: list[Member]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)


def list_files(source: CorpusSource) -> Listing:
    """``CorpusError`` for a named path that cannot be read, and when the globs leave no file."""
    listing = Listing([])
    seen_dirs: set[tuple[int, int]] = set()
    found: list[Member] = []
    for raw in source.paths:
        p = Path(raw)
        try:
            st = p.stat()
        except FileNotFoundError:
            raise CorpusError(f"{short(raw, 200)}: no such file or directory") from None
        except OSError as e:
            raise CorpusError(f"{short(raw, 200)}: cannot read: {e.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            inside: list[Member] = []
            _walk(p, source, inside, listing, seen_dirs)
            found += sorted(inside, key=lambda m: m.name)
        elif stat.S_ISREG(st.st_mode):
            found.append(Member(p, raw, named=True, identity=(st.st_dev, st.st_ino)))
        else:
            raise CorpusError(f"{short(raw, 200)}: not a regular file")
    first: dict[tuple[int, int], str] = {}
    for m in found:  # a file reached twice (named twice, beside its directory, by a link): the first time only
        if m.identity in first:
            listing.skipped.append((m.name, f"read already (as {short(first[m.identity], 40)})"))
        else:
            first[m.identity] = m.name
            listing.members.append(m)
    if not listing.members and listing.excluded:
        raise CorpusError(f"{source.label}{describe_globs(source)}: the globs leave no file to read; they excluded "
                          f"{len(listing.excluded):,} file{'s' * (len(listing.excluded) != 1)} "
                          f"({', '.join(short(n, 40) for n in listing.excluded[:3])}"
                          f"{', ...' if len(listing.excluded) > 3 else ''})")
    return listing


def _walk(root: Path, source: CorpusSource, found: list, listing: Listing, seen: set) -> None:
    """Depth-first over ``root``, in name order, with a stack of directories being read instead of
    recursion: a tree of any depth is walked. Every member that is not a readable regular file
    is skipped with its kind."""
    stack = [_listed(root, "", listing.skipped, seen)]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        e, name = entry
        try:
            is_dir = e.is_dir()
        except OSError:
            is_dir = False
        if is_dir and source.excludes_dir(name):
            listing.excluded.append(name + "/")
            continue
        if e.name.startswith("."):
            listing.skipped.append((name, "hidden"))
            continue
        try:
            st = os.stat(e.path)  # follows links
        except OSError as err:
            listing.skipped.append((name, _unreadable(err, link=e.is_symlink())))
            continue
        if stat.S_ISDIR(st.st_mode):
            stack.append(_listed(Path(e.path), name + "/", listing.skipped, seen))
        elif not source.wants(name):
            listing.excluded.append(name)
        elif stat.S_ISREG(st.st_mode):
            found.append(Member(Path(e.path), name, named=False, identity=(st.st_dev, st.st_ino)))
        else:
            listing.skipped.append((name, _odd_kind(st.st_mode)))


def _listed(d: Path, prefix: str, skipped: list, seen: set):
    """(entry, its name relative to the walk's root) for each member of ``d`` in name order; none
    when ``d`` was read already (a link back up, or two links to one place) or cannot be listed."""
    where = prefix.rstrip("/") or str(d)
    try:
        st = d.stat()
        if (st.st_dev, st.st_ino) in seen:
            skipped.append((where, "read already (a directory reached twice, by a link)"))
            return
        seen.add((st.st_dev, st.st_ino))
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        skipped.append((where, _unreadable(e)))
        return
    for e in entries:
        yield e, prefix + e.name


def _unreadable(e: OSError, link: bool = False) -> str:
    if e.errno == errno.ELOOP:
        return "link loop"
    if e.errno == errno.ENAMETOOLONG:
        return "path too long (deeper than the system allows)"
    if e.errno == errno.ENOENT and link:
        return "broken symbolic link"
    return f"unreadable ({e.strerror})"


def _odd_kind(mode: int) -> str:
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "not a regular file"


def describe_globs(source: CorpusSource) -> str:
    return "".join(f" --include {short(g, 20)}" for g in source.include) + \
        "".join(f" --exclude {short(g, 20)}" for g in source.exclude)


def describe_listing(source: CorpusSource, files: int, nbytes: int, skipped: list[tuple[str, str]]) -> str:
    """One line: what was read and what was skipped."""
    line = f"corpus: read {files:,} file{'s' * (files != 1)} ({format_bytes(nbytes)}) from {source.label}" \
           f"{describe_globs(source)}"
    return line + (f"; {describe_skipped(skipped)}" if skipped else "")


def describe_skipped(skipped: list[tuple[str, str]], show: int = 3) -> str:
    """'skipped 5 (binary 3, hidden 2: a.png, b.png, .git, ...)': how many of each kind, the first names."""
    kinds = Counter(reason.split(" (")[0] for _, reason in skipped)
    names = ", ".join(short(n, 40) for n, _ in skipped[:show]) + (", ..." if len(skipped) > show else "")
    return f"skipped {len(skipped):,} ({', '.join(f'{k} {v:,}' for k, v in kinds.most_common())}: {names})"


def short(s: str, n: int = 60) -> str:
    """A user-supplied name as a line may show it: at most n characters (its start and its end,
    where a path's file name is), with every character that is not printable escaped (a newline
    in a file name cannot start a line of its own; a byte that is not UTF-8 shows as \\udcXX)."""
    s = "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                if ord(c) < 0xD800 or ord(c) > 0xDFFF else f"\\u{ord(c):04x}" for c in s)
    if len(s) <= n:
        return s
    head = n // 3
    return s[:head] + "..." + s[len(s) - (n - head - 3) :]
