"""``charlm cache``: the encoded-corpus cache (cache.py), listed or cleared."""

from __future__ import annotations

import click

from .. import cache
from ..memory import format_bytes
from .base import dumps, main, option


@main.command("cache")
@option("--clear", is_flag=True, help="Delete every entry.")
@option("--json", "as_json", is_flag=True, help="One JSON object.")
def cache_command(clear, as_json):
    """List the encoded-corpus cache: where it is ($CHARLM_CACHE, else ~/.cache/charlm/corpora;
    CHARLM_CACHE=off turns it off) and each corpus in it. Corpora of 16 MB and more are encoded
    once into it, and later runs map the file instead of decoding the text again."""
    d = cache.cache_dir()
    if clear:
        n, freed = cache.clear(d)
        click.echo(dumps({"directory": str(d), "removed_files": n, "freed_bytes": freed}) if as_json
                   else f"removed {n:,} files ({format_bytes(freed)}) from {d}")
        return
    listed = cache.entries(d)
    if as_json:
        click.echo(dumps({"directory": None if d is None else str(d), "entries": [
            {"file": str(p), "bytes": size, "corpus": (m or {}).get("fingerprint")} for p, m, size in listed]}))
        return
    if d is None:
        click.echo("the corpus cache is off (CHARLM_CACHE=off)")
        return
    click.echo(f"{d}: {len(listed):,} corpora, {format_bytes(sum(s for _, _, s in listed))}")
    for p, m, size in listed:
        fp = (m or {}).get("fingerprint") or {}
        click.echo(f"  {p.stem}  {format_bytes(size):>9}  {fp.get('chars', 0):>15,} chars  {fp.get('path', '(unreadable)')}")
