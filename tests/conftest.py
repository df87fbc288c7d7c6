import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from charlm.config import ModelConfig
from charlm.network.model import Model
from tests.helpers import CELL_VOCAB, SETS, SHAKESPEARE, charlm, random_text, run, tiny_overrides


@pytest.fixture(autouse=True, scope="session")
def _private_corpus_cache(tmp_path_factory):
    """The encoded-corpus cache of every test (and every charlm they start) is the session's
    own, never the user's ~/.cache."""
    import os

    os.environ["CHARLM_CACHE"] = str(tmp_path_factory.mktemp("corpus-cache"))



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


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A module's corpus for the commands: ~9k characters, patterned then random."""
    p = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    p.write_text(("hero hell hole hello\n" * 300) + random_text(3000, seed=1), encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def run_dir(corpus, tmp_path_factory) -> Path:
    """A small RNN trained on ``corpus`` by the installed script, once per module."""
    out = tmp_path_factory.mktemp("run") / "run"
    r = charlm("train", corpus, "--out", out, "-q", *SETS)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory) -> Path:
    """A small LSTM run with a fitted n-gram mixture (its directory), once per module."""
    from charlm.predict.checkpoint import load_checkpoint

    d = tmp_path_factory.mktemp("mixed")
    corpus = d / "corpus.txt"
    corpus.write_text(("hero hell hole hello\n" * 200) + random_text(3000, seed=9), encoding="utf-8")
    sets = tiny_overrides(**{"model.ngram_order": 3, "train.max_steps": 30, "train.eval_every": 15})
    r = run("train", corpus, "--out", d / "small", "-q", *[x for s in sets for x in ("--set", s)])
    assert r.exit_code == 0, r.output
    assert load_checkpoint(d / "small" / "best.npz").meta["mix_weight"] is not None
    return d / "small"  # the server names it "small"


@pytest.fixture
def trained(corpus_file, tmp_path) -> tuple[Path, str]:
    """(run directory, what train printed) of a tiny LSTM trained in-process."""
    sets = [x for o in tiny_overrides() for x in ("--set", o)]
    r = run("train", corpus_file, "--out", tmp_path / "run", *sets)
    assert r.exit_code == 0, r.output
    return tmp_path / "run", r.output


@pytest.fixture(params=["lstm", "gru", "rnn"])
def cell_model(request) -> Model:
    """A two-layer float64 model of each cell over CELL_VOCAB, seeded."""
    m = Model(ModelConfig(type=request.param, hidden_size=12, num_layers=2, dtype="float64"), len(CELL_VOCAB))
    m.init(np.random.default_rng(0))
    return m
