"""Dynamic evaluation (charlm/predict/adapt.py, ``score --adapt``): the update rule, scoring before
learning, what carries from text to text, and that the weights on disk never change."""

import dataclasses
import hashlib
import json

import numpy as np
import pytest

from charlm.config import ModelConfig
from charlm.network.model import Model
from charlm.predict.adapt import EPS, Adaptive, AdaptOptions
from charlm.text.vocab import Vocab
from charlm.use.score import char_nats, explain, score_texts
from tests.helpers import charlm, one_error_line, random_text, tiny_overrides

VOCAB = Vocab.from_text("helo wrd\n")
TEXT = "hello world\n" * 20  # 240 characters: twelve segments of 20, repeating


def model(dropout=0.0, seed=0):
    m = Model(ModelConfig(type="lstm", hidden_size=12, num_layers=2, dropout=dropout, dtype="float64"), len(VOCAB))
    m.init(np.random.default_rng(seed))
    return m


def test_each_step_is_the_rms_scaled_update_pulled_back_towards_the_trained_weights():
    opts = AdaptOptions(segment=6, lr=0.01, decay=0.1)
    net, ref = model(), model()
    theta0 = ref.flat.copy()
    ids = VOCAB.encode("hello world\nhello")
    a = Adaptive(net, opts)
    state = a.zero_state(1)
    theta, ms, ref_state = theta0.copy(), np.zeros_like(theta0), ref.zero_state(1)
    for k, t0 in enumerate(range(0, 12, 6)):  # two segments, written out as the equations are
        x, y = ids[t0 : t0 + 6, None], ids[t0 + 1 : t0 + 7, None]
        _, state = a.nll(x, y, state)
        ref.flat[...] = theta
        ref.loss_and_grad(x, y, ref_state)
        _, ref_state = ref.nll(x, y, ref_state)
        g = ref.grad.copy()
        ms = ms + (g * g - ms) / (k + 1)
        theta = theta - opts.lr * g / (np.sqrt(ms) + EPS) + opts.decay * (theta0 - theta)
        np.testing.assert_allclose(net.flat, theta, rtol=1e-12, atol=1e-14)
    assert not np.allclose(net.flat, theta0)


def test_every_character_is_scored_before_the_model_learns_from_it():
    ids = VOCAB.encode(TEXT)
    static = char_nats(model(), ids, 1, 20)
    adapted = char_nats(Adaptive(model(), AdaptOptions(segment=20, lr=0.01)), ids, 1, 20)
    np.testing.assert_allclose(adapted[:20], static[:20], rtol=1e-12)  # the first segment: nothing learned yet
    assert not np.allclose(adapted[20:40], static[20:40])
    assert adapted[120:].mean() < static[120:].mean() - 0.2  # repeated text gets cheaper as it is read


def test_explain_and_score_agree_and_a_text_learned_from_carries_to_the_next():
    opts = AdaptOptions(segment=20, lr=0.01, decay=0.01)
    [whole] = score_texts(Adaptive(model(), opts), VOCAB, [TEXT])
    chars = explain(Adaptive(model(), opts), VOCAB, TEXT)
    assert sum(c.bits for c in chars) == pytest.approx(-whole.log_prob_bits, rel=1e-9)
    a = Adaptive(model(), opts)
    first, second = score_texts(a, VOCAB, [TEXT, TEXT])
    assert first.log_prob_nats == pytest.approx(whole.log_prob_nats, rel=1e-12)
    assert second.log_prob_nats > first.log_prob_nats + 1.0  # the second reading starts from what the first learned


def test_adapting_a_model_with_dropout_uses_no_dropout():
    ids = VOCAB.encode(TEXT)
    a = char_nats(Adaptive(model(dropout=0.5), AdaptOptions(lr=0.01)), ids, 1, 20)
    b = char_nats(Adaptive(model(dropout=0.5), AdaptOptions(lr=0.01)), ids, 1, 20)
    np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("adapt")
    (d / "c.txt").write_text(("hero hell hole hello\n" * 300) + random_text(3000, seed=1), encoding="utf-8")
    sets = [x for o in tiny_overrides(**{"model.ngram_order": 3, "train.max_steps": 40}) for x in ("--set", o)]
    r = charlm("train", d / "c.txt", "--out", d / "run", "-q", *sets)
    assert r.returncode == 0, r.stderr
    (d / "t.txt").write_text("hello hero hole hell\n" * 30, encoding="utf-8")
    return d


def sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_score_adapt_reports_static_and_adapted_and_leaves_the_checkpoint_alone(run_dir):
    ck = run_dir / "run" / "best.npz"
    before = sha(ck)
    r = charlm("score", "--file", run_dir / "t.txt", "-c", ck, "--adapt", "--adapt-lr", "0.003", "--json")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert row["adapt"] == {**dataclasses.asdict(AdaptOptions()), "lr": 0.003}
    assert row["bits_per_char"] < row["static_bits_per_char"]  # a mixture's network learning the repeated line
    plain = json.loads(charlm("score", "--file", run_dir / "t.txt", "-c", ck, "--json").stdout)
    assert row["static_bits_per_char"] == pytest.approx(plain["bits_per_char"], rel=1e-9)
    text = charlm("score", "--explain", "--file", run_dir / "t.txt", "-c", ck, "--adapt")
    assert text.returncode == 0 and f"adapted ({row['static_bits_per_char']:.3f} static)" in text.stdout
    table = charlm("score", "--lines", run_dir / "t.txt", "-c", ck, "-c", ck, "--adapt")
    assert table.returncode == 0 and "bits/char adapted/static" in table.stdout
    assert sha(ck) == before


def test_adapt_settings_without_adapt_are_a_usage_error(run_dir):
    r = charlm("score", "hello", "-c", run_dir / "run", "--adapt-lr", "0.01")
    assert "give --adapt" in one_error_line(r, code=2)
    r = charlm("score", "hello", "-c", run_dir / "run", "--adapt", "--adapt-lr", "nan")
    assert "nan is not a number" in one_error_line(r, code=2) or "not in the range" in r.stderr


def test_report_explains_the_held_out_text_adapted(run_dir, tmp_path):
    from charlm.see.report import report_data

    data = report_data(run_dir / "run", adapt=AdaptOptions(), grad_steps=5, grad_streams=4)
    assert "adapted as it was read" in data["explain_total"] and "static" in data["explain_total"]
    plain = report_data(run_dir / "run", grad_steps=5, grad_streams=4)
    assert plain["explain_total"].endswith("characters")


# ---- divergence: every allowed --adapt-* value on every cell and activation gives a valid score ----

CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")]
EXTREMES = [(seg, lr, decay) for seg in (1, 10_000) for lr in (1e-12, 1.0) for decay in (0.0, 1.0)]
HOSTILE = ("hero hell hole hello\n" * 6) + "zzzz qqqq xxxx " * 10


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A briefly trained float32 checkpoint of each cell and activation."""
    d = tmp_path_factory.mktemp("cells")
    text = d / "t.txt"
    text.write_text(("hero hell hole hello\n" * 100) + random_text(2000, seed=4, alphabet="helo rdxzq\n"))
    out = {}
    for cell, act in CELLS:
        sets = tiny_overrides(**{"model.type": cell, "model.activation": act, "train.max_steps": 20,
                                 "model.hidden_size": 16, "train.lr": 0.05})
        r = charlm("train", text, "--out", d / f"{cell}-{act}", "-q", *[x for s in sets for x in ("--set", s)])
        assert r.returncode == 0, r.stderr
        out[(cell, act)] = d / f"{cell}-{act}"
    return out


@pytest.mark.parametrize("cell, act", CELLS)
def test_every_extreme_of_the_adapt_options_gives_a_finite_score_or_says_it_returned(trained, cell, act):
    from click.testing import CliRunner

    from charlm.cli import main

    for seg, lr, decay in EXTREMES:
        args = ["score", HOSTILE, "-c", str(trained[(cell, act)]), "--adapt", "--adapt-segment", str(seg),
                "--adapt-lr", str(lr), "--adapt-decay", str(decay)]
        for extra in (["--json"], [], ["--explain", "--json"], ["--explain"]):
            r = CliRunner().invoke(main, args + extra)
            assert r.exit_code == 0 and r.exception is None, (seg, lr, decay, extra, r.output[-300:])
            assert not any(w in r.output for w in ("nan", "NaN", "inf", "Infinity")), (seg, lr, decay, extra)
            assert r.output.count("returned to the trained weights") <= 1
            if extra == ["--json"]:
                [row] = [json.loads(l) for l in r.output.splitlines() if l.startswith("{")]
                assert 0 <= row["bits_per_char"] < 200 and row["static_bits_per_char"] > 0


def test_a_diverging_adaptation_returns_to_the_trained_weights_and_says_so_once(trained):
    """The relu RNN at the largest step: the weights overflow within a few segments."""
    from charlm.predict.checkpoint import load_checkpoint

    ck = load_checkpoint(trained[("rnn", "relu")] / "best.npz")
    a = Adaptive(ck.build_predictor(), AdaptOptions(segment=1, lr=1.0, decay=0.0))
    [s] = score_texts(a, ck.vocab, [HOSTILE])
    assert a.resets > 0 and np.isfinite(s.log_prob_nats)
    assert np.isfinite(a.net.flat).all()
    r = charlm("score", HOSTILE, "-c", trained[("rnn", "relu")], "--adapt", "--adapt-segment", "1", "--adapt-lr",
               "1", "--adapt-decay", "0", "--json")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("returned to the trained weights") == 1, r.stderr
    row = json.loads(r.stdout)
    assert row["adapt_resets"] > 0 and np.isfinite(row["bits_per_char"])


# ---- a network whose activations overflow: one line, never NaN -------------------------------

@pytest.fixture(scope="module")
def overflowing(trained, tmp_path_factory):
    """The trained relu RNN with its recurrent weights multiplied: every weight finite, but its
    hidden state grows past float32 within a few hundred characters."""
    from charlm.predict.checkpoint import load_checkpoint, save_checkpoint

    ck = load_checkpoint(trained[("rnn", "relu")] / "best.npz")
    model = ck.build_model()
    for l in range(ck.config.model.num_layers):
        model.params[f"l{l}/Wh"][...] *= 40
    out = tmp_path_factory.mktemp("overflow") / "relu.npz"
    save_checkpoint(out, model, ck.vocab, ck.config, {k: v for k, v in ck.meta.items() if k != "path"})
    return out


@pytest.mark.parametrize("args", [["score", "{text}"], ["score", "{text}", "--json"], ["score", "{text}", "--explain"],
                                  ["score", "{text}", "--adapt", "--json"], ["sample", "-n", "400", "--json"],
                                  ["sample", "-n", "400"], ["sample", "-n", "100", "--beam", "3"]])
def test_a_network_that_overflows_is_one_line_not_nan(overflowing, args):
    text = ("hero hell hole hello\n" * 20)
    r = charlm(*[a.replace("{text}", text) for a in args], "-c", overflowing)
    line = one_error_line(r, 1)
    assert "not finite" in line and "RuntimeWarning" not in r.stderr
    assert "nan" not in r.stdout.lower()
