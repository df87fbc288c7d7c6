"""``charlm serve`` under load: characters per second and time to the first character for 1, 4
and 16 streaming clients at once, beside ``charlm sample`` (``generate``, one stream) in this
process, and where a server's time goes.

    python -m benchmarks.serve [--clients 1,4,16] [--tokens 400] [--rounds 3] [--json]

Every round starts ``charlm serve --port 0`` (the bundled model) in a fresh process with the
shell's BLAS settings (OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, as a user's machine runs),
then, for each client count in turn, that many threads each stream a completion of --tokens
characters (temperature 1, a seed each) at once; between the server's rows, ``generate`` runs
one sample of the same length here, so a machine that slows for a while slows both. A row
reports the median and range over the rounds of:

- chars/s: all clients' characters over the wall time from the first request to the last end;
- ratio: that over one client's chars/s in the same round (the target for 16: 5x);
- first char: each client's time to its first character, the median over clients;
- sample: ``generate``'s chars/s in this process for the same length.

Where the time goes (``--profile``): the engine without HTTP (streams submitted in-process and
drained) and the model's forward step alone, at 1 and 16 streams, per character.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from .common import machine_info

CHARLM = Path(sys.executable).parent / "charlm"


def start_server() -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    p = subprocess.Popen([str(CHARLM), "serve", "--port", "0"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                         text=True, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = re.search(r"serving .* at (http://\S+?): the OpenAI API", p.stderr.readline())
        if found:
            threading.Thread(target=p.stderr.read, daemon=True).start()  # drain the access log
            return p, found.group(1)
    p.kill()
    raise SystemExit("charlm serve did not start")


def stream_one(url: str, tokens: int, seed: int) -> tuple[float, float, float, int]:
    """(start, first character, end, characters) of one streamed completion."""
    body = json.dumps({"prompt": "ROMEO:", "max_tokens": tokens, "seed": seed, "stream": True}).encode()
    req = urllib.request.Request(url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
    start, first, chars = time.perf_counter(), None, 0
    with urllib.request.urlopen(req, timeout=600) as r:
        for line in r:
            if line.startswith(b"data: {"):
                text = json.loads(line[6:])["choices"][0]["text"]
                if text and first is None:
                    first = time.perf_counter()
                chars += len(text)
    return start, first or time.perf_counter(), time.perf_counter(), chars


def clients_at_once(url: str, n: int, tokens: int, seed0: int) -> dict:
    results = [None] * n

    def run(i):
        results[i] = stream_one(url, tokens, seed0 + i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    t0, t1 = min(r[0] for r in results), max(r[2] for r in results)
    chars = sum(r[3] for r in results)
    return {"chars_per_s": chars / (t1 - t0), "first_char_s": statistics.median(r[1] - r[0] for r in results),
            "chars": chars}


def sample_rate(tokens: int, seed: int) -> float:
    from charlm.predict.checkpoint import BUNDLED, load_checkpoint
    from charlm.use.sample import generate

    ck = load_checkpoint(BUNDLED, with_training_state=False)
    model = ck.build_predictor()
    t = time.perf_counter()
    generate(model, ck.vocab, "ROMEO:", tokens, seed=seed)
    return tokens / (time.perf_counter() - t)


def profile(tokens: int) -> list[dict]:
    """Per character, at 1 and 16 streams: the model's forward step alone, and the engine
    (forward, drawing, stop strings, hand-over) without HTTP."""
    import numpy as np

    from charlm.predict.checkpoint import BUNDLED, load_checkpoint
    from charlm.serve.engine import Engine, Params, Stream, seeded

    ck = load_checkpoint(BUNDLED, with_training_state=False)
    model = ck.build_predictor()
    prompt = ck.vocab.encode("ROMEO:").astype(np.int64)
    rows = []
    for B in (1, 16):
        with model.inference():
            state, x = model.zero_state(B), np.zeros((1, B), np.int64)
            t = time.perf_counter()
            for _ in range(tokens):
                _, state = model.forward(x, state)
            forward = (time.perf_counter() - t) / tokens
        engine = Engine(model, ck.vocab).start()
        streams = [Stream(prompt, Params(max_tokens=tokens, seed=i), i, seeded(i, 0)) for i in range(B)]
        t = time.perf_counter()
        engine.submit(streams)
        for s in streams:  # woken when each finishes, not for each character
            while s.finish_reason is None:
                s.wait(1)
                s.take()
        step = (time.perf_counter() - t) / tokens
        engine.stop()
        rows.append({"streams": B, "forward_ms": 1e3 * forward, "engine_step_ms": 1e3 * step,
                     "engine_chars_per_s": B / step})
    return rows


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--tokens", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="also the engine alone and the forward step alone")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    counts = [int(c) for c in args.clients.split(",")]
    print(json.dumps(machine_info()) if args.json else f"machine: {machine_info()}", flush=True)
    per = {n: [] for n in counts}
    samples = []
    for r in range(args.rounds):
        proc, url = start_server()
        try:
            clients_at_once(url, 1, 20, 0)  # warm: the first request allocates the engine's buffers
            for n in counts:
                samples.append(sample_rate(args.tokens, r))
                per[n].append(clients_at_once(url, n, args.tokens, 1000 * r))
        finally:
            proc.terminate()
            proc.wait(60)
    rows = []
    for n in counts:
        rates = [x["chars_per_s"] for x in per[n]]
        ratios = [x["chars_per_s"] / one["chars_per_s"] for x, one in zip(per[n], per[counts[0]])]
        first = [x["first_char_s"] for x in per[n]]
        rows.append({"clients": n, "chars_per_s": statistics.median(rates), "chars_per_s_range": [min(rates), max(rates)],
                     "ratio_to_one_client": statistics.median(ratios), "ratio_range": [min(ratios), max(ratios)],
                     "first_char_ms": 1e3 * statistics.median(first), "first_char_ms_range":
                     [1e3 * min(first), 1e3 * max(first)], "rounds": args.rounds, "tokens": args.tokens})
    rows.append({"sample_chars_per_s": statistics.median(samples), "sample_range": [min(samples), max(samples)]})
    if args.profile:
        rows += profile(args.tokens)
    for row in rows:
        print(json.dumps(row) if args.json else _line(row), flush=True)
    return rows


def _line(row: dict) -> str:
    if "clients" in row:
        lo, hi = row["chars_per_s_range"]
        return (f"{row['clients']:>2} clients: {row['chars_per_s']:>8,.0f} chars/s ({lo:,.0f}-{hi:,.0f}), "
                f"{row['ratio_to_one_client']:.2f}x one client, first character {row['first_char_ms']:.0f} ms")
    if "sample_chars_per_s" in row:
        lo, hi = row["sample_range"]
        return f"charlm sample (generate, one stream, this process): {row['sample_chars_per_s']:,.0f} chars/s ({lo:,.0f}-{hi:,.0f})"
    return (f"{row['streams']:>2} streams: forward {row['forward_ms']:.3f} ms/step, engine {row['engine_step_ms']:.3f} "
            f"ms/step ({row['engine_chars_per_s']:,.0f} chars/s)")


if __name__ == "__main__":
    main()
