import math

import numpy as np
import pytest

from charlm.config import ModelConfig
from charlm.errors import CharlmError, VocabError
from charlm.network.model import Model
from charlm.text.vocab import Vocab
from charlm.use.sample import sample
from charlm.use.score import evaluate, score_texts

VOCAB = Vocab.from_text("abcdefgh \n")


@pytest.fixture(params=["lstm", "gru", "rnn"])
def model(request):
    m = Model(ModelConfig(type=request.param, hidden_size=12, num_layers=2, dtype="float64"), len(VOCAB))
    m.init(np.random.default_rng(0))
    return m


def test_same_seed_same_text(model):
    a = "".join(sample(model, VOCAB, 200, prime="ab", seed=3))
    b = "".join(sample(model, VOCAB, 200, prime="ab", seed=3))
    c = "".join(sample(model, VOCAB, 200, prime="ab", seed=4))
    assert a == b != c and len(a) == 200 and set(a) <= set(VOCAB.chars)


def test_greedy_is_argmax_and_top_k_one_is_greedy(model):
    g = "".join(sample(model, VOCAB, 50, prime="a", greedy=True))
    assert g == "".join(sample(model, VOCAB, 50, prime="a", top_k=1, seed=9))
    # greedy follows the model's most probable next character
    ids = VOCAB.encode("a" + g).astype(np.int64)
    logits, _ = model.forward(ids[:-1, None], model.zero_state(1))
    assert (logits.argmax(axis=0) == ids[1:]).all()


def test_temperature_towards_zero_approaches_greedy(model):
    greedy = "".join(sample(model, VOCAB, 60, greedy=True))
    assert "".join(sample(model, VOCAB, 60, temperature=1e-4, seed=1)) == greedy
    assert "".join(sample(model, VOCAB, 60, temperature=5.0, seed=1)) != greedy


@pytest.mark.parametrize("kw, message", [({"temperature": 0}, "temperature"), ({"length": -1}, "length"),
                                         ({"top_k": 0}, "top_k"), ({"top_p": 1.5}, "top_p"), ({"temperature": float("nan")}, "temperature"), ({"prime": "xyz"}, "'x'.*'y'.*'z'")])
def test_bad_sampling_arguments(model, kw, message):
    with pytest.raises(CharlmError, match=message):
        list(sample(model, VOCAB, **{"length": 5, **kw}))


def test_score_matches_sum_of_conditional_log_probs(model):
    text = "abba cab"
    [s] = score_texts(model, VOCAB, [text], context="\n")
    ids = VOCAB.encode("\n" + text).astype(np.int64)
    nll, _ = model.nll(ids[:-1, None], ids[1:, None], model.zero_state(1))
    assert s.log_prob_nats == pytest.approx(-nll.sum(), rel=1e-12)
    assert s.chars == 8 and s.bits_per_char == pytest.approx(nll.sum() / 8 / math.log(2))
    assert s.perplexity == pytest.approx(math.exp(nll.mean()))


def test_batched_scoring_equals_one_at_a_time(model):
    texts = ["a", "abcdefgh", "hhh ggg", "ab\ncd", "b" * 40]
    together = score_texts(model, VOCAB, texts, batch_size=3, window=7)
    for t, s in zip(texts, together):
        [alone] = score_texts(model, VOCAB, [t])
        assert s.log_prob_nats == pytest.approx(alone.log_prob_nats, rel=1e-10)


def test_chain_rule(model):
    """log p(a+b) = log p(a) + log p(b | a)."""
    a, b = "abc", "hg fe"
    [ab] = score_texts(model, VOCAB, [a + b])
    [pa] = score_texts(model, VOCAB, [a])
    [pb] = score_texts(model, VOCAB, [b], context="\n" + a)
    assert ab.log_prob_nats == pytest.approx(pa.log_prob_nats + pb.log_prob_nats, rel=1e-10)


def test_unknown_characters(model):
    with pytest.raises(VocabError, match="'X'.*unknown='skip' leaves them out"):
        score_texts(model, VOCAB, ["abXc"])
    [s] = score_texts(model, VOCAB, ["abXcY"], unknown="skip")
    assert s.skipped == 2 and s.chars == 3
    with pytest.raises(CharlmError, match="empty"):
        score_texts(model, VOCAB, [""])


def test_evaluate_is_mean_nll(model):
    ids = VOCAB.encode("abcdefgh \n" * 30)
    v = evaluate(model, ids, batch_size=1, seq_length=1000)
    x = ids[:-1].astype(np.int64)[:, None]
    nll, _ = model.nll(x, ids[1:].astype(np.int64)[:, None], model.zero_state(1))
    assert v == pytest.approx(nll.mean(), rel=1e-10)
