"""The vectorised Kneser-Ney model (charlm/predict/ngram.py) against the dictionary one in
tests/reference.py, and the n-gram mixture (charlm/predict/mixture.py)."""

import json
import math

import numpy as np
import pytest

from charlm.config import ModelConfig, load_config
from charlm.network.model import Model
from charlm.predict.ngram import KneserNey
from charlm.text.vocab import Vocab
from charlm.training.trainer import Trainer, train
from tests.helpers import random_text, tiny_overrides
from tests.reference import KneserNeyReference


def _fit(text, order, extra=""):
    vocab = Vocab.from_text(text + extra)
    return vocab, KneserNey(vocab.encode(text), order, len(vocab)), KneserNeyReference(text, order, len(vocab))


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_every_probability_matches_the_reference(order):
    text = "hero hell hole hello " * 5 + random_text(300, seed=order, alphabet="helo rx\n")
    vocab, kn, ref = _fit(text, order, extra="Z")  # Z: in the vocabulary, never in the text
    histories = ["", "h", "he", "hel", "hell", "xxxx", "Zhel", "o he", "ZZZZ"]
    for h in histories:
        hist = np.full((1, order - 1), -1, np.int64)
        tail = h[-(order - 1):] if order > 1 else ""
        if tail:
            hist[0, order - 1 - len(tail):] = vocab.encode(tail)
        full = kn.probs(hist)[:, 0]
        assert full.sum() == pytest.approx(1.0, abs=1e-12)
        for i, w in enumerate(vocab.chars):
            assert full[i] == pytest.approx(ref.prob(w, h), rel=1e-12, abs=1e-15)
            assert kn.probs(hist, np.array([i]))[0] == full[i]


def test_nats_of_a_text_match_the_reference_with_and_without_history():
    text = random_text(2000, seed=4, alphabet="abcab c\n")
    vocab, kn, ref = _fit(text[:1500], 4, extra=text)
    ids = vocab.encode(text)
    got = kn.nats(ids[1500:], before=ids[:1500])
    want = [-np.log(ref.prob(text[i], text[max(0, i - 3):i])) for i in range(1500, 2000)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    alone = kn.nats(ids[1500:1510])  # no history: the first characters use shorter contexts
    np.testing.assert_allclose(alone, [-np.log(ref.prob(text[i], text[max(1500, i - 3):i])) for i in range(1500, 1510)],
                               rtol=1e-12)


# ---- the mixture -----------------------------------------------------------------------------
from charlm.predict.mixture import Mixture, cross_fitted_nats, fit_weight, mix_nats  # noqa: E402


def _mixture(weight=0.3, order=3, seed=0):
    text = "hero hell hole hello " * 20 + random_text(400, seed=seed, alphabet="helo r\n")
    vocab = Vocab.from_text(text)
    net = Model(ModelConfig(type="lstm", hidden_size=8, num_layers=1, dtype="float64"), len(vocab))
    net.init(np.random.default_rng(seed))
    return Mixture(net, KneserNey(vocab.encode(text), order, len(vocab)), weight), vocab, text


def test_mixture_forward_is_the_weighted_sum_of_both_distributions():
    mix, vocab, text = _mixture()
    ids = vocab.encode("hello hero hole").astype(np.int64)[:, None]  # (T, 1)
    logp, _ = mix.forward(ids, mix.zero_state(1))
    p = np.exp(logp)
    np.testing.assert_allclose(p.sum(axis=0), 1.0, atol=1e-12)
    net_logits, _ = mix.net.forward(ids, mix.net.zero_state(1))
    net_p = np.exp(net_logits - net_logits.max(axis=0))
    net_p /= net_p.sum(axis=0)
    seen = [-1] + ids[:, 0].tolist()  # step t predicts from the characters up to and including ids[t]
    hist = np.array([seen[t : t + 2] for t in range(len(ids))])  # the last 2 (order 3), -1 before the text
    np.testing.assert_allclose(p, 0.3 * net_p + 0.7 * mix.ngram.probs(hist), rtol=1e-10)


@pytest.mark.parametrize("order", [1, 3, 5])
def test_mixture_nll_matches_forward_and_carries_history_across_windows(order):
    mix, vocab, text = _mixture(weight=0.6, order=order)
    ids = vocab.encode(text[:61]).astype(np.int64)
    x, y = ids[:-1, None], ids[1:, None]
    whole, _ = mix.nll(x, y, mix.zero_state(1))
    logp, _ = mix.forward(x, mix.zero_state(1))
    np.testing.assert_allclose(whole[:, 0], -logp[y[:, 0], np.arange(60)], rtol=1e-10)
    state, parts = mix.zero_state(1), []
    for t in range(0, 60, 7):  # windows of 7: the n-gram history and the network state carry over
        nll, state = mix.nll(x[t : t + 7], y[t : t + 7], state)
        parts.append(nll)
    np.testing.assert_allclose(np.concatenate(parts)[:, 0], whole[:, 0], rtol=1e-10)


def test_fitted_weight_minimises_the_mixed_loss():
    rng = np.random.default_rng(0)
    a, b = rng.exponential(1.0, 500), rng.exponential(1.2, 500)
    w = fit_weight(a, b)
    best = mix_nats(a, b, w).mean()
    for other in (w - 0.02, w + 0.02, 0.0, 1.0):
        assert best <= mix_nats(a, b, np.clip(other, 0, 1)).mean() + 1e-12
    assert fit_weight(a, a + 5.0) == 1.0  # the n-gram is always far worse: the network alone
    assert fit_weight(a + 5.0, a) == 0.0
    mixed, w_all = cross_fitted_nats(a, b)
    assert w_all == pytest.approx(w)
    assert mixed < min(a.mean(), b.mean())  # two models that err on different characters


def test_a_run_with_a_mixture_records_both_losses_and_its_checkpoints_carry_the_ngram(corpus_file, tmp_path):
    from charlm.predict.checkpoint import export_weights, load_checkpoint
    from charlm.use.score import evaluate


    train(load_config(None, tiny_overrides(**{"model.ngram_order": 4})), corpus_file, tmp_path / "run")
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(0.0 <= r["mix_weight"] <= 1.0 and r["val_loss"] <= r["val_loss_net"] + 0.01 for r in rows)
    ck = load_checkpoint(tmp_path / "run" / "best.npz")
    assert ck.meta["mix_weight"] == min(rows, key=lambda r: r["val_loss"])["mix_weight"]
    mix = ck.build_predictor()
    assert isinstance(mix, Mixture) and mix.weight == ck.meta["mix_weight"]
    cfg = ck.config.data
    assert len(ck.ngram_ids) == ck.meta["train_chars"]  # the n-gram counts the training split
    export_weights(ck, tmp_path / "model.npz")
    again = load_checkpoint(tmp_path / "model.npz").build_predictor()
    ids = np.concatenate([ck.ngram_ids[-300:], ck.ngram_ids[:300]])
    assert evaluate(again, ids, cfg.batch_size, cfg.seq_length) == evaluate(mix, ids, cfg.batch_size, cfg.seq_length)


def test_training_says_plainly_when_it_ends_above_the_ngram_baseline(tmp_path):
    from tests.helpers import SETS, charlm

    corpus = tmp_path / "rhymes.txt"
    corpus.write_text("hero hell hole hello\n" * 400, encoding="utf-8")  # a 5-gram predicts nearly all of it
    short = [x if x != "train.max_steps=30" else "train.max_steps=3" for x in SETS]
    r = charlm("train", corpus, "--out", tmp_path / "run", *short)
    assert r.returncode == 0, r.stderr
    line = [l for l in r.stdout.splitlines() if "above the 5-gram baseline" in l]
    assert len(line) == 1 and "try --from bundled (English text), a longer --minutes, or more text" in line[0], r.stdout


def test_early_stopping_watches_the_network_not_the_mixture(corpus_file, tmp_path):
    """While the network is worse than the n-gram the mixture's loss barely moves: judged on it,
    a run would stop before the network had learned anything."""


    tr = Trainer(load_config(None, tiny_overrides(**{"model.ngram_order": 4, "train.patience": 2})), corpus_file,
                 tmp_path / "run")
    first = tr.evaluate()
    assert tr.state.plateau_ref == first["val_loss_net"] != first["val_loss"]
    for _ in range(60):
        tr.train_step()
    second = tr.evaluate()
    assert second["val_loss_net"] < first["val_loss_net"] and tr.state.stale_evals == 0


def test_kneser_ney_is_a_distribution_and_beats_unigram():
    from charlm.predict.baseline import baseline
    from charlm.predict.ngram import KneserNey

    text = ("the cat sat on the mat. the dog sat on the log. " * 40) + random_text(500, seed=3)
    V = sorted(set(text) | {"Q"})  # a character never seen still gets probability
    enc = lambda s: np.array([V.index(c) for c in s], dtype=np.int64)
    kn = KneserNey(enc(text), 5, len(V))

    def prob(w, h):
        hist = np.full((1, 4), -1)
        if h:
            hist[0, 4 - len(h[-4:]) :] = enc(h[-4:])
        return float(kn.probs(hist, enc(w))[0])

    for h in ["the c", "sat o", "QQQQ", "", "Q"]:  # QQQQ: a context never seen
        assert sum(prob(w, h) for w in V) == pytest.approx(1.0, abs=1e-12)
        assert prob("Q", h) > 0
    assert prob("a", "the c") > 0.9  # "the c" is always followed by "a"
    ids = enc(text)
    b = baseline(ids[:1200], ids[1200:1900], 5, len(V))  # the repeated sentences: predictable
    assert b.kneser_ney_bpc < 0.5 < b.unigram_bpc < math.log2(len(V))
