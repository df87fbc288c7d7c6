"""Corpus loading cost against size: generated 1, 10 and 100 MB corpora (mixed ASCII and
multi-byte UTF-8), seconds and peak memory to load and encode each.

    python -m benchmarks.scale [--sizes-mb 1,10,100] [--json]

Each size is loaded in a fresh subprocess so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def generate(path: Path, megabytes: float, seed: int = 0) -> None:
    """Words of ASCII, accented Latin, Greek and CJK, written in 1 MB blocks."""
    import numpy as np

    rng = np.random.default_rng(seed)
    alphabet = list("abcdefghijklmnopqrstuvwxyz ,.\n") * 4 + list("éèüößñçåø") + list("αβγδεζηθ") + list("日本語한국어中文")
    target = int(megabytes * 2**20)
    with open(path, "wb") as f:
        written = 0
        while written < target:
            block = "".join(rng.choice(alphabet, 400_000)).encode("utf-8")
            block = block[: target - written].decode("utf-8", "ignore").encode("utf-8")
            f.write(block)
            written += len(block)
            if not block:
                break


def probe(path: str) -> None:
    """Subprocess entry: load one corpus; print seconds, peak RSS growth, chars, bytes/char."""
    import numpy as np  # noqa: F401  (the baseline includes NumPy itself)

    from charlm.data import load_corpus

    from .common import status_kb

    base = status_kb("VmRSS")
    t = time.perf_counter()
    c = load_corpus(path)
    secs = time.perf_counter() - t
    print(json.dumps({"seconds": secs, "peak_growth_bytes": (status_kb("VmHWM") - base) * 1024, "chars": len(c),
                      "bytes_per_char": c.ids.dtype.itemsize, "vocab": len(c.vocab)}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes-mb", default="1,10,100")
    p.add_argument("--dir", default=None, help="where to write the generated corpora (removed after)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--probe", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.probe:
        return probe(args.probe)
    out = []
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        for mb in [float(s) for s in args.sizes_mb.split(",")]:
            path = Path(d) / f"corpus-{mb:g}MB.txt"
            generate(path, mb)
            r = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--probe", str(path)],
                               capture_output=True, text=True, check=True)
            rec = {"size_mb": mb, "file_bytes": path.stat().st_size, **json.loads(r.stdout.strip().splitlines()[-1])}
            rec["peak_over_file"] = rec["peak_growth_bytes"] / rec["file_bytes"]
            path.unlink()
            out.append(rec)
            if args.json:
                print(json.dumps(rec), flush=True)
            else:
                print(f"{mb:>6g} MB  {rec['chars']:>12,} chars  {rec['seconds']:7.2f} s  peak +{rec['peak_growth_bytes'] / 2**20:7.1f} MB "
                      f"({rec['peak_over_file']:.2f}x file)  {rec['bytes_per_char']} byte(s)/char, vocab {rec['vocab']}", flush=True)
    return out


if __name__ == "__main__":
    main()
