"""``charlm cache``: the encoded-corpus cache (cache.py), listed or cleared."""

from __future__ import annotations

import click

from ..system import format_bytes
from ..text import cache
from .base import dumps, main, option

KINDS = {"damaged": "a damaged entry (the next run on its corpus replaces it; --clear deletes it)",
         "writing": "being written by a running charlm",
         "killed": "left by a process that was killed while writing (the next run deletes it)",
         "old": "an entry of the format before (never read again; --clear deletes it)"}


@main.command("cache")
@option("--clear", is_flag=True, help="Delete every entry and what killed writers left; nothing charlm did not write.")
@option("--json", "as_json", is_flag=True, help="One JSON object.")
def cache_command(clear, as_json):
    """List the encoded-corpus cache: where it is ($CHARLM_CACHE, else
    $XDG_CACHE_HOME/charlm/corpora, else ~/.cache/charlm/corpora; CHARLM_CACHE=off turns it off),
    each corpus in it, and anything else charlm left there. Corpora of 16 MiB and more are encoded
    once into it, and later runs map the file instead of decoding the text again."""
    d = cache.cache_dir()
    if d is None:
        nothing = {"directory": None, **({"removed_files": 0, "freed_bytes": 0} if clear else {"entries": [], "other": []})}
        click.echo(dumps(nothing) if as_json else "the corpus cache is off (CHARLM_CACHE=off): nothing to list or clear")
        return
    if clear:
        n, freed = cache.clear(d)
        click.echo(dumps({"directory": str(d), "removed_files": n, "freed_bytes": freed}) if as_json
                   else f"removed {n:,} file{'s' * (n != 1)} ({format_bytes(freed)}) from {d}")
        return
    listed = cache.entries(d)
    if as_json:
        click.echo(dumps({"directory": None if d is None else str(d), "entries": [
            {"file": str(x.path), "bytes": x.size, "corpus": x.meta["fingerprint"]}
            for x in listed if x.kind == "entry"], "other": [
            {"file": str(x.path), "bytes": x.size, "kind": x.kind} for x in listed if x.kind != "entry"]}))
        return
    corpora = [x for x in listed if x.kind == "entry"]
    click.echo(f"{d}: {len(corpora):,} corpora, {format_bytes(sum(x.size for x in listed))}")
    for x in corpora:
        fp = x.meta.get("fingerprint") if isinstance(x.meta.get("fingerprint"), dict) else {}
        chars = fp.get("chars") if isinstance(fp.get("chars"), int) else 0
        click.echo(f"  {x.path.stem}  {format_bytes(x.size):>9}  {chars:>15,} chars  {str(fp.get('path', '?'))[:80]}")
    for x in listed:
        if x.kind != "entry":
            click.echo(f"  {x.path.name}  {format_bytes(x.size):>9}  {KINDS[x.kind]}")
