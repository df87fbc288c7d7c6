"""Dynamic evaluation (``charlm score --adapt``): static against adapted bits per character, and
the options around their defaults, one changed at a time.

    python -m benchmarks.adapt [--checkpoint bundled] [--out runs/adapt.jsonl] [--threads 2]

Texts: tiny Shakespeare's validation split (the last 10%, as training holds it out), and as a
text from another domain the GNU GPL version 3 (benchmarks/corpora.py's gpl3), whose
characters outside the model's vocabulary are skipped, as ``--unknown skip`` does. Each
adapted score starts from the trained weights. Rows: JSON lines in --out and on stdout.
"""

from __future__ import annotations

from benchmarks.common import set_threads

set_threads()

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, replace  # noqa: E402
from pathlib import Path  # noqa: E402

from benchmarks.common import ROOT, corpus_path, machine_info  # noqa: E402
from benchmarks.corpora import build  # noqa: E402
from charlm.predict.adapt import Adaptive, AdaptOptions
from charlm.text.corpus import split
from charlm.training.finetune import open_source
from charlm.use.score import LN2, score_texts


def texts(ck) -> dict[str, str]:
    shakespeare = corpus_path().read_text(encoding="utf-8")
    _, val = split(ck.vocab.encode(shakespeare), 0.1)
    gpl3 = ROOT / "corpora" / "gpl3.txt"
    if not gpl3.is_file():
        build(gpl3.parent)
    return {"shakespeare-val": ck.vocab.decode(val), "gpl3": gpl3.read_text(encoding="utf-8")}


def bpc(ck, text: str, options: AdaptOptions | None) -> float:
    model = ck.build_predictor()
    if options is not None:
        model = Adaptive(model, options)
    [s] = score_texts(model, ck.vocab, [text], unknown="skip")
    return s.bits_per_char


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="bundled")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "adapt.jsonl")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    ck = open_source(args.checkpoint)
    d = AdaptOptions()
    grid = [d, replace(d, lr=d.lr / 3), replace(d, lr=d.lr * 3), replace(d, segment=10), replace(d, segment=50),
            replace(d, decay=0.0), replace(d, decay=d.decay * 10)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(json.dumps({"machine": machine_info(), "checkpoint": ck.meta["path"]}), flush=True)
    for name, text in texts(ck).items():
        static = bpc(ck, text, None)
        for options in grid if name == "shakespeare-val" else grid[:1]:
            t0 = time.perf_counter()
            adapted = bpc(ck, text, options)
            row = {"text": name, "chars": len(text), **asdict(options), "static_bpc": static, "adapted_bpc": adapted,
                   "gain_nats": (static - adapted) * LN2, "seconds": round(time.perf_counter() - t0, 1)}
            print(json.dumps(row), flush=True)
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
