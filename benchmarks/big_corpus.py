"""charlm on corpora of 100 MB to 5 GB: reading, ``--dry-run``, the encoded-corpus cache, and
the share of training time that evaluation takes.

    python -m benchmarks.big_corpus [--sizes 100M,1G,5G] [--dir /tmp/charlm-big] [--json]

The corpus of size S (built here, never committed): every ``*.py`` file under Python's
standard library (``sysconfig.get_paths()['stdlib']``, recursively, sorted by path, those that
decode as UTF-8; not ``site-packages``, whose contents vary by machine), concatenated; that text repeated until S bytes, the last copy cut at a line
end. Written once to DIR/corpus-S.txt and reused.

For each size, every measurement runs in a fresh process with CHARLM_CACHE=DIR/cache (emptied
before the first run of each size), so the peak RSS (the child's ru_maxrss) is its own:
- read: one pass that reads the file in 8 MB chunks, the floor for anything that reads it;
- load, first and cached: ``load_corpus(FILE)``, cold cache (decode, encode, write the
  cache), then from the cache (check and map it);
- dry-run, first and cached: ``charlm train FILE --dry-run`` with LSTM 2x256 (which times a
  few training steps too);
- evaluation share: LSTM 2x256 with the default train.eval_every (500) and train.eval_chars:
  the time of one evaluation against that of 500 training steps (timed over --steps steps).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from .common import ROOT, machine_info

SIZES = {"M": 10**6, "G": 10**9}


def parse_size(s: str) -> int:
    return int(float(s[:-1]) * SIZES[s[-1].upper()]) if s[-1].upper() in SIZES else int(s)


def base_text() -> str:
    root = Path(sysconfig.get_paths()["stdlib"])
    parts = []
    for p in sorted(root.rglob("*.py")):
        if p.relative_to(root).parts[0] in ("site-packages", "dist-packages"):
            continue
        try:
            parts.append(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            continue
    return "".join(t if t.endswith("\n") else t + "\n" for t in parts)


def build(path: Path, size: int) -> Path:
    if path.is_file() and path.stat().st_size == size:
        return path
    raw = base_text().encode("utf-8")
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        left = size
        while left > 0:
            piece = raw[:left]
            if len(piece) < len(raw):  # the last copy: cut at a line end, pad the rest with newlines
                piece = piece[: piece.rfind(b"\n") + 1]
                piece += b"\n" * (left - len(piece))
            f.write(piece)
            left -= len(piece)
    os.replace(tmp, path)
    return path


CHILD = {
    "read": "f = open(FILE, 'rb')\nwhile f.read(8 << 20): pass",
    "load": "from charlm.text.corpus import load_corpus\nc = load_corpus(FILE)\nOUT['chars'] = len(c)\n"
            "OUT['encoded_bytes'] = c.ids.nbytes\nOUT['mapped'] = type(c.ids).__name__ == 'memmap'",
    "dry_run": "import contextlib, io\nfrom charlm.cli import main\nbuf = io.StringIO()\n"
               "with contextlib.redirect_stdout(buf):\n"
               "    main(['train', FILE, '--dry-run', '--json', '--set', 'model.hidden_size=256', '--set',\n"
               "          'model.num_layers=2', '--out', '/tmp/charlm-big-dry'], standalone_mode=False)\n"
               "OUT['memory_estimate_bytes'] = json.loads(buf.getvalue().strip().splitlines()[-1])['memory_bytes']",
    "eval_share": "from charlm.config import load_config\nfrom charlm.text.corpus import load_corpus\n"
                  "from charlm.training.trainer import Trainer\n"
                  "cfg = load_config(None, ['model.hidden_size=256', 'model.num_layers=2'])\n"
                  "tr = Trainer(cfg, load_corpus(FILE), out_dir=None)\n"
                  "tr.train_step()\nt = time.perf_counter()\nfor _ in range(STEPS): tr.train_step()\n"
                  "step = (time.perf_counter() - t) / STEPS\nt = time.perf_counter()\ntr.evaluate()\n"
                  "ev = time.perf_counter() - t\nE = cfg.train.eval_every\n"
                  "OUT.update(step_s=step, eval_s=ev, eval_chars=len(tr.eval_ids), val_chars=len(tr.val_ids),\n"
                  "           eval_share=ev / (E * step + ev))",
}


def child(task: str, file: Path, env: dict, steps: int) -> dict:
    """Run ``task`` in a fresh Python: its wall seconds, peak RSS and what it reports."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child would report its
    # parent's peak; the high-water mark belongs to the new address space.
    code = ("import json, sys, time\nFILE, STEPS, OUT = sys.argv[1], int(sys.argv[2]), {}\n"
            "t0 = time.perf_counter()\n" + CHILD[task] + "\nOUT['seconds'] = time.perf_counter() - t0\n"
            "OUT['peak_rss_bytes'] = [int(l.split()[1]) * 1024 for l in open('/proc/self/status')\n"
            "                         if l.startswith('VmHWM:')][0]\n"
            "print(json.dumps(OUT))")
    r = subprocess.run([sys.executable, "-c", code, str(file), str(steps)], env=env, cwd=ROOT,
                       capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{task} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100M,1G,5G")
    p.add_argument("--dir", default="/tmp/charlm-big")
    p.add_argument("--steps", type=int, default=30, help="training steps timed for the evaluation share")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CHARLM_CACHE": str(d / "cache")}
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    print(json.dumps(machine_info()), flush=True)
    bare = child("read", Path(os.devnull), env, 0)["peak_rss_bytes"]  # a Python that imports nothing
    for s in args.sizes.split(","):
        size = parse_size(s)
        file = build(d / f"corpus-{s}.txt", size)
        shutil.rmtree(d / "cache", ignore_errors=True)
        row = {"size": s, "bytes": size, "bare_python_rss_bytes": bare,
               "read": child("read", file, env, 0),
               "load_first": child("load", file, env, 0), "load_cached": child("load", file, env, 0),
               "dry_run_cached": child("dry_run", file, env, 0)}
        shutil.rmtree(d / "cache", ignore_errors=True)
        row["dry_run_first"] = child("dry_run", file, env, 0)
        row["eval_share"] = child("eval_share", file, env, args.steps)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
