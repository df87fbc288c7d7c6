"""Build the corpora that measure charlm on text other than Shakespeare, from what every
machine with Python (and Debian's base system) has offline. Nothing built here is committed;
docs/own-text.md lists each corpus with its size and SHA-256 as built on the reference machine.

    python -m benchmarks.corpora [--out corpora]

- gpl3: the GNU GPL version 3, /usr/share/common-licenses/GPL-3 (English legal prose, ~35 KB).
- licenses: every regular file of /usr/share/common-licenses (symbolic links left out, as
  they repeat a file), sorted by name, each followed by a blank line (~250 KB).
- pydoc: the English help topics of Python's documentation data (``pydoc_data.topics.topics``),
  the values in sorted key order, each followed by a blank line (~750 KB).
- stdlib: Python source: the standard library's top-level ``*.py`` files in sorted order, whole
  files, until 500,000 characters are reached.
- ru-man: Russian manual pages (Cyrillic with troff markup): /usr/share/man/ru/man1/*.1.gz,
  sorted, decompressed, until 300,000 characters are reached.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import sysconfig
from pathlib import Path


def _until(texts, limit: int) -> str:
    out, n = [], 0
    for t in texts:
        if n >= limit:
            break
        out.append(t)
        n += len(t)
    return "".join(out)


def _read(p: Path) -> str | None:
    try:
        return p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def gpl3() -> str:
    return Path("/usr/share/common-licenses/GPL-3").read_text(encoding="utf-8")


def licenses() -> str:
    files = sorted(p for p in Path("/usr/share/common-licenses").iterdir() if p.is_file() and not p.is_symlink())
    return "".join(t + "\n" for t in map(_read, files) if t)


def pydoc() -> str:
    from pydoc_data.topics import topics

    return "".join(topics[k] + "\n" for k in sorted(topics))


def stdlib() -> str:
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    return _until((t for t in map(_read, files) if t), 500_000)


def ru_man() -> str:
    def pages():
        for p in sorted(Path("/usr/share/man/ru/man1").glob("*.1.gz")):
            try:
                yield gzip.decompress(p.read_bytes()).decode("utf-8")
            except (OSError, UnicodeDecodeError):
                continue

    return _until(pages(), 300_000)


CORPORA = {"gpl3": gpl3, "licenses": licenses, "pydoc": pydoc, "stdlib": stdlib, "ru-man": ru_man}


def build(out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, make in CORPORA.items():
        text = make()
        p = out / f"{name}.txt"
        p.write_text(text, encoding="utf-8")
        paths[name] = p
        print(f"{name}: {len(text):,} characters, {p.stat().st_size:,} bytes, {len(set(text))} distinct, "
              f"sha256 {hashlib.sha256(p.read_bytes()).hexdigest()[:16]}")
    return paths


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="corpora", type=Path)
    build(ap.parse_args().out)
