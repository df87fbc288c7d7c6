"""A model outside charlm: the network alone (``--network-only``), a prime from a file, and
``charlm export`` to ONNX (checked with onnxruntime) and to a self-contained web page (checked in
headless Chromium) against charlm's own scores."""

import json

import pytest
from click.testing import CliRunner

from charlm.checkpoint import load_checkpoint
from charlm.cli import main
from charlm.sample import generate
from charlm.score import score_texts

from .conftest import random_text, tiny_overrides


def invoke(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A run with a fitted n-gram mixture."""
    d = tmp_path_factory.mktemp("mixed")
    corpus = d / "corpus.txt"
    corpus.write_text(("hero hell hole hello\n" * 150) + random_text(3000, seed=5), encoding="utf-8")
    sets = tiny_overrides(**{"model.ngram_order": 3, "train.max_steps": 20, "train.eval_every": 10})
    r = invoke("train", corpus, "--out", d / "run", "-q", *[x for s in sets for x in ("--set", s)])
    assert r.exit_code == 0, r.output
    assert load_checkpoint(d / "run" / "best.npz").meta["mix_weight"] is not None
    return d / "run" / "best.npz"


def test_network_only_scores_and_samples_with_the_network_alone(mixed):
    ck = load_checkpoint(mixed, with_training_state=False)
    text = "hello hero"
    net = score_texts(ck.build_model(), ck.vocab, [text])[0].bits_per_char
    mix = score_texts(ck.build_predictor(), ck.vocab, [text])[0].bits_per_char
    assert abs(net - mix) > 1e-3
    for flags, want in (([], mix), (["--network-only"], net)):
        r = invoke("score", text, "-c", mixed, "--json", *flags)
        assert r.exit_code == 0, r.output
        assert json.loads(r.output)["bits_per_char"] == pytest.approx(want, abs=1e-12)
    r = invoke("sample", "-c", mixed, "--network-only", "--prime", "he", "-n", "80", "--seed", "3", "--json")
    assert r.exit_code == 0, r.output
    [s] = generate(ck.build_model(), ck.vocab, "he", 80, seed=3)
    assert json.loads(r.output)["text"] == s.text
    [m] = generate(ck.build_predictor(), ck.vocab, "he", 80, seed=3)
    assert m.text != s.text


def test_network_only_on_a_model_without_a_mixture_is_the_model(mixed, tmp_path):
    a, b = (invoke("score", "hello", "--json", *f) for f in ([], ["--network-only"]))  # the bundled model
    assert a.exit_code == b.exit_code == 0
    assert json.loads(a.output.splitlines()[-1]) == json.loads(b.output.splitlines()[-1])


def test_prime_file_is_the_files_text_exactly(mixed, tmp_path):
    ck = load_checkpoint(mixed, with_training_state=False)
    prime = "hero\nhell\n\nhole "  # newlines inside and a trailing space: kept as they are
    (tmp_path / "prime.txt").write_text(prime, encoding="utf-8")
    r = invoke("sample", "-c", mixed, "--prime-file", tmp_path / "prime.txt", "-n", "40", "--seed", "2", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    [s] = generate(ck.build_predictor(), ck.vocab, prime, 40, seed=2)
    assert out["prime"] == prime and out["text"] == s.text
    r = invoke("sample", "-c", mixed, "--prime-file", tmp_path / "prime.txt", "-n", "10", "--seed", "2")
    assert r.output.startswith(prime)


@pytest.mark.parametrize("content, says", [(b"", "is empty"), (b"caf\xe9", "not UTF-8"), (None, "does not exist")])
def test_a_bad_prime_file_is_one_line(mixed, tmp_path, content, says):
    p = tmp_path / "prime.txt"
    if content is not None:
        p.write_bytes(content)
    r = invoke("sample", "-c", mixed, "--prime-file", p, "-n", "5")
    assert r.exit_code != 0 and says in r.output and "Traceback" not in r.output
    r = invoke("sample", "-c", mixed, "--prime-file", tmp_path / "x", "--prime", "a")
    assert r.exit_code == 2 and "--prime-file" in r.output
