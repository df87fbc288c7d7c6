"""What many tests share: running the installed ``charlm`` script, reading its errors and JSON,
small corpora and configs, numerical gradients, and watching a browser page. Fixtures are in
conftest.py."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from benchmarks.common import ROOT, SHAKESPEARE  # noqa: F401  (one place that finds the corpus)
from charlm.cli import main
from charlm.text.vocab import Vocab

# PyTorch is a reference in tests, never a dependency: its comparisons carry the mark ``torch``
# and skip without it (the README's test command); .ci/run then installs [bench] and runs
# ``pytest -m torch``. Tests that run both with and without it carry the mark alone.
HAVE_TORCH = importlib.util.find_spec("torch") is not None
TORCH_MARKS = [pytest.mark.torch, pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch not installed (pip install '.[bench]')")]


def needs_torch(test):
    for mark in TORCH_MARKS:
        test = mark(test)
    return test

# The alphabet of random_text, and the vocabulary of the small models the cell tests build.
CELL_VOCAB = Vocab.from_text("abcdefgh \n")

def random_text(n: int, seed: int = 0, alphabet: str = "abcdefgh \n") -> str:
    rng = np.random.default_rng(seed)
    return "".join(rng.choice(list(alphabet), n))


def tiny_overrides(**extra) -> list[str]:
    base = {"model.type": "lstm", "model.hidden_size": 16, "model.num_layers": 2, "data.batch_size": 4,
            "data.seq_length": 8, "train.max_steps": 30, "train.eval_every": 10, "train.checkpoint_every": 10,
            "train.lr": 0.01}
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def watched(page) -> tuple[list, list]:
    """(console errors and warnings, URLs requested) of a playwright page, as they happen."""
    errors, requests = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda q: requests.append(q.url))
    return errors, requests


CHARLM = shutil.which("charlm", path=str(Path(sys.executable).parent)) or shutil.which("charlm")


SETS = [x for o in tiny_overrides(**{"model.type": "rnn", "model.num_layers": 1, "model.hidden_size": 24})
        for x in ("--set", o)]


# One BLAS thread: a product's rounding depends on how many threads share it, and the tests that
# compare two runs bit for bit must run both alike (ENV for the ones they start with Popen).
ENV = {"OPENBLAS_NUM_THREADS": "1", "NO_COLOR": "1"}


def run(*args, input=None):
    """charlm in-process (Click's CliRunner): faster than the script, same exit codes and output."""
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def charlm(*args, input=None, cwd=None, umask=None, timeout=120):
    assert CHARLM, "the charlm console script is not installed (pip install -e .)"
    env = {**os.environ, **ENV}
    pre = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run([CHARLM, *map(str, args)], input=input, capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout, preexec_fn=pre)


def one_error_line(r, code=None):
    assert r.returncode != 0 if code is None else r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert lines and lines[-1].startswith("Error: "), r.stderr
    errors = [l for l in lines if l.startswith("Error: ")]
    assert len(errors) == 1, r.stderr
    return errors[0]


def strict_json_lines(text):
    def refuse(c):
        raise AssertionError(f"not strict JSON: {c}")

    return [json.loads(l, parse_constant=refuse) for l in text.splitlines() if l.strip()]


def numeric_grad(f, x, eps=1e-5):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        a = f()
        x[i] = old - eps
        b = f()
        x[i] = old
        g[i] = (a - b) / (2 * eps)
    return g


def rel_err(a, b):
    return np.abs(a - b).max() / max(1e-8, np.abs(a).max(), np.abs(b).max())
