"""A model outside charlm: the network alone (``--network-only``), a prime from a file, and
``charlm export`` to ONNX (checked with onnxruntime) and to a self-contained web page (checked in
headless Chromium) against charlm's own scores."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from charlm.cli import main
from charlm.predict.checkpoint import load_checkpoint
from charlm.use.sample import generate
from charlm.use.score import score_texts
from tests.helpers import watched


def invoke(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r


@pytest.fixture(scope="module")
def mixed(mixed_run):
    """The best checkpoint of a run with a fitted n-gram mixture."""
    return mixed_run / "best.npz"


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


# ---- ONNX, checked with onnxruntime -----------------------------------------------------------

CELLS = [("lstm", "tanh"), ("gru", "tanh"), ("rnn", "tanh"), ("rnn", "relu")]
HELD_OUT = "hero hole,\nhello hell; a bed faced a cafe.\n" * 3


def checkpoint(cell, act, layers, dtype="float32", seed=0):
    """A network with random weights (a trained one is less chaotic: float32 rounding grows less)."""
    from charlm.config import Config, ModelConfig
    from charlm.network.model import Model
    from charlm.predict.checkpoint import Checkpoint
    from charlm.text.vocab import Vocab

    vocab = Vocab.from_text(HELD_OUT + "xyz")
    cfg = Config(model=ModelConfig(type=cell, activation=act, hidden_size=24, num_layers=layers, dtype=dtype),
                 name=f"{cell}-{act}-{layers}")
    m = Model(cfg.model, len(vocab))
    m.init(np.random.default_rng(seed))
    m.flat *= 1.5 if dtype == "float32" and act == "tanh" else 1.0  # gates that saturate at times
    return Checkpoint(cfg, vocab, {k: v.copy() for k, v in m.params.items()}, {"path": "x.npz", "lineage": None})


def session(ck):
    ort = pytest.importorskip("onnxruntime")
    from charlm.export import onnx as exported

    return ort.InferenceSession(exported.build(ck).SerializeToString(), providers=["CPUExecutionProvider"])


def feeds(ck, ids, h=None, c=None):
    L, H, B = ck.config.model.num_layers, ck.config.model.hidden_size, ids.shape[1]
    f = {"ids": ids.astype(np.int64), "h0": np.zeros((L, B, H), np.float32) if h is None else h}
    if ck.config.model.type == "lstm":
        f["c0"] = np.zeros((L, B, H), np.float32) if c is None else c
    return f


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("cell, act", CELLS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_onnx_log_probs_equal_charlms_network(cell, act, layers, dtype):
    ck = checkpoint(cell, act, layers, dtype)
    net = ck.build_model()
    ids = ck.vocab.encode(HELD_OUT).astype(np.int64)
    x = np.stack([ids[:-1], np.roll(ids, 7)[:-1]], axis=1)  # (T, 2): two streams
    y = np.stack([ids[1:], np.roll(ids, 7)[1:]], axis=1)
    want, _ = net.nll(x, y, net.zero_state(2))
    log_probs = session(ck).run(["log_probs"], feeds(ck, x))[0]  # (T, B, V)
    got = -np.take_along_axis(log_probs, y[:, :, None], axis=2)[:, :, 0]
    assert np.abs(got - want).max() < 1e-4, np.abs(got - want).max()
    assert want.mean() > 1.0  # not a model that predicts everything with certainty


@pytest.mark.parametrize("cell, act", CELLS)
def test_onnx_state_carried_across_two_calls_equals_one_call(cell, act):
    ck = checkpoint(cell, act, 2)
    sess = session(ck)
    ids = ck.vocab.encode(HELD_OUT).astype(np.int64)[:, None]
    names = ["log_probs", "hT"] + (["cT"] if cell == "lstm" else [])
    whole = sess.run(names, feeds(ck, ids))
    first = sess.run(names, feeds(ck, ids[:50]))
    second = sess.run(names, feeds(ck, ids[50:], first[1], first[2] if cell == "lstm" else None))
    np.testing.assert_allclose(np.concatenate([first[0], second[0]]), whole[0], atol=1e-5)
    for a, b in zip(second[1:], whole[1:]):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_onnx_file_carries_its_vocabulary_config_and_lineage(mixed, tmp_path):
    onnx = pytest.importorskip("onnx")
    out = tmp_path / "model.onnx"
    r = invoke("export", mixed, "-o", out)
    assert r.exit_code == 0, r.output
    assert "onnx" in r.output and "3-gram mixed with this model is not exported" in r.output
    assert "the network alone scored" in r.output
    ck = load_checkpoint(mixed)
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(props["vocabulary"]) == list(ck.vocab.chars)
    assert json.loads(props["config"]) == ck.config.to_dict()
    assert json.loads(props["lineage"]) is None
    # the network alone, as charlm scores it, is what the graph computes
    sess = pytest.importorskip("onnxruntime").InferenceSession(str(out), providers=["CPUExecutionProvider"])
    text = "hello hero"
    ids = ck.vocab.encode("\n" + text).astype(np.int64)[:, None]
    lp = sess.run(["log_probs"], feeds(ck, ids[:-1]))[0][:, 0, :]
    bits = -lp[np.arange(len(text)), ids[1:, 0]].sum() / np.log(2) / len(text)
    r = invoke("score", text, "-c", mixed, "--network-only", "--json")
    assert abs(json.loads(r.output)["bits_per_char"] - bits) < 1e-4


def test_the_format_follows_the_suffix_or_format(mixed, tmp_path):
    r = invoke("export", mixed, "-o", tmp_path / "w.bin")
    assert r.exit_code == 0 and "npz" in r.output
    assert load_checkpoint(tmp_path / "w.bin").optim == {}
    r = invoke("export", mixed, "-o", tmp_path / "m.bin", "--format", "onnx")
    assert r.exit_code == 0 and (tmp_path / "m.bin").read_bytes()[:2] != b"PK"


# ---- the page, checked in headless Chromium --------------------------------------------------------

def exported_page(ck, path):
    from charlm.export import page

    page.write(ck, path)
    return path


def page_bits(browser, path, text):
    from urllib.parse import quote

    page = browser.new_page()
    errors, requests = watched(page)
    page.goto(path.as_uri() + "#score=" + quote(text))
    page.wait_for_function("document.getElementById('bits-per-char').textContent !== ''")
    bits = float(page.locator("#bits-per-char").inner_text())
    colours = [page.locator("#score-chars span").nth(i).get_attribute("class") for i in range(len(text))]
    page.close()
    assert errors == [] and [u for u in requests if not u.startswith("file:")] == []
    return bits, colours


@pytest.mark.parametrize("cell, act", CELLS)
def test_the_page_scores_as_charlm_does(browser, tmp_path, cell, act):
    from charlm.use.score import explain

    ck = checkpoint(cell, act, 2)
    text = "hello hero, a bed faced a cafe"
    want = score_texts(ck.build_model(), ck.vocab, [text])[0].bits_per_char
    bits, colours = page_bits(browser, exported_page(ck, tmp_path / "page.html"), text)
    assert abs(bits - want) < 1e-3, (bits, want)
    limits = [(1, "low"), (3, "mid"), (6, "high"), (float("inf"), "top")]  # score --explain's colours
    surprise = [c.bits for c in explain(ck.build_model(), ck.vocab, text)]
    assert colours == [next(name for lim, name in limits if b <= lim) for b in surprise]


def test_the_bundled_models_page_is_small_offline_and_streams_a_sample(browser, tmp_path):
    from charlm.predict.checkpoint import BUNDLED

    out = tmp_path / "page.html"
    r = invoke("export", BUNDLED, "-o", out)
    assert r.exit_code == 0, r.output
    weights = sum(a.nbytes for a in load_checkpoint(BUNDLED).params.values())
    assert out.stat().st_size < 1.5 * weights
    html = out.read_text()
    assert "<script src" not in html and "<link" not in html and "http" not in html.split("<script")[0]
    page = browser.new_page()
    errors, requests = watched(page)
    page.goto(out.as_uri() + "#prime=ROMEO:&temperature=0.8&length=600&seed=1")
    seen = []
    for _ in range(200):
        seen.append(len(page.locator("#sample").inner_text()))
        if page.locator("#sample-status").inner_text() == "600 characters":
            break
        page.wait_for_timeout(20)
    text = page.locator("#sample").inner_text()
    assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 600
    assert len({n for n in seen if 6 < n < 606}) >= 3  # it streamed in: seen at three lengths or more
    # a page that scores: bits per character as charlm score --network-only prints them
    r = invoke("score", "To be, or not to be", "--network-only", "--json")
    want = json.loads(r.output.splitlines()[-1])["bits_per_char"]
    page.goto(out.as_uri() + "#score=To%20be%2C%20or%20not%20to%20be")
    page.wait_for_function("document.getElementById('bits-per-char').textContent !== ''")
    assert abs(float(page.locator("#bits-per-char").inner_text()) - want) < 1e-3
    # unknown characters are said, as charlm says them
    page.goto(out.as_uri() + "#score=caf%C3%A9")
    assert "'é' (U+00E9)" in page.locator("#score-error").inner_text()
    assert errors == [] and [u for u in requests if not u.startswith("file:")] == []
    page.close()
