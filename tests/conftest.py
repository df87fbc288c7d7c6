import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks.common import ROOT, SHAKESPEARE  # noqa: F401  (one place that finds the corpus)

try:
    import torch  # noqa: F401

    HAVE_TORCH = True
except ImportError:
    HAVE_TORCH = False

needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch not installed (pip install '.[bench]')")


@pytest.fixture(autouse=True, scope="session")
def _private_corpus_cache(tmp_path_factory):
    """The encoded-corpus cache of every test (and every charlm they start) is the session's
    own, never the user's ~/.cache."""
    import os

    os.environ["CHARLM_CACHE"] = str(tmp_path_factory.mktemp("corpus-cache"))


def random_text(n: int, seed: int = 0, alphabet: str = "abcdefgh \n") -> str:
    rng = np.random.default_rng(seed)
    return "".join(rng.choice(list(alphabet), n))


@pytest.fixture
def shakespeare() -> Path:
    """The real corpus, shipped in data/: missing is a failure, never a skip."""
    if not SHAKESPEARE.is_file():
        pytest.fail(f"the corpus {SHAKESPEARE} is missing (restore data/tinyshakespeare.txt or set CHARLM_SHAKESPEARE)")
    return SHAKESPEARE


@pytest.fixture
def corpus_file(tmp_path) -> Path:
    """~6k characters of patterned text: learnable, and long enough for small batches."""
    text = ("hero hell hole hello " * 150) + random_text(3000, seed=1)
    p = tmp_path / "corpus.txt"
    p.write_text(text, encoding="utf-8")
    return p


def tiny_overrides(**extra) -> list[str]:
    base = {"model.type": "lstm", "model.hidden_size": 16, "model.num_layers": 2, "data.batch_size": 4,
            "data.seq_length": 8, "train.max_steps": 30, "train.eval_every": 10, "train.checkpoint_every": 10,
            "train.lr": 0.01}
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium driven by playwright: missing is a failure under CI=true
    (.ci/run installs it), a skip elsewhere."""
    if CHROMIUM is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def watched(page) -> tuple[list, list]:
    """(console errors and warnings, URLs requested) of a playwright page, as they happen."""
    errors, requests = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda q: requests.append(q.url))
    return errors, requests
