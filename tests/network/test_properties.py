"""Properties (hypothesis): vocabulary round trip, the chain rule of scoring, sampling stays
in the vocabulary, a resolved config round-trips through YAML."""

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from charlm.config import Config, load_config
from charlm.network.model import Model
from charlm.text.vocab import Vocab
from charlm.use.sample import sample
from charlm.use.score import score_texts

ALPHABET = "ab \n"
VOCAB = Vocab.from_text(ALPHABET)


@settings(max_examples=200, deadline=None)
@given(chars=st.text(min_size=1, max_size=30).map(lambda s: sorted(set(s))), data=st.data())
def test_vocab_round_trips_any_unicode(chars, data):
    v = Vocab(chars)
    text = data.draw(st.text(alphabet=st.sampled_from(chars), max_size=200))
    ids = v.encode(text)
    assert v.decode(ids) == text and len(ids) == len(text)


@pytest.fixture(scope="module", params=["lstm", "gru", "rnn"])
def model(request):
    m = Model(load_config(None, [f"model.type={request.param}", "model.hidden_size=8", "model.dtype=float64"]).model, len(VOCAB))
    m.init(np.random.default_rng(0))
    return m


texts = st.text(alphabet=ALPHABET, min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(a=texts, b=texts)
def test_chain_rule_of_scores(model, a, b):
    [ab] = score_texts(model, VOCAB, [a + b])
    [pa] = score_texts(model, VOCAB, [a])
    [pb] = score_texts(model, VOCAB, [b], context="\n" + a)
    assert ab.log_prob_nats == pytest.approx(pa.log_prob_nats + pb.log_prob_nats, rel=1e-9, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(prime=texts, seed=st.integers(0, 2**32), temperature=st.floats(0.05, 5.0), top_k=st.none() | st.integers(1, 6))
def test_sampling_emits_vocabulary_and_greedy_is_deterministic(model, prime, seed, temperature, top_k):
    out = "".join(sample(model, VOCAB, 30, prime=prime, temperature=temperature, top_k=top_k, seed=seed))
    assert len(out) == 30 and set(out) <= set(VOCAB.chars)
    g1 = "".join(sample(model, VOCAB, 30, prime=prime, greedy=True, seed=seed))
    g2 = "".join(sample(model, VOCAB, 30, prime=prime, greedy=True, seed=seed + 1))
    assert g1 == g2


configs = st.fixed_dictionaries({
    "model.type": st.sampled_from(["rnn", "lstm", "gru"]),
    "model.hidden_size": st.integers(1, 4096),
    "model.num_layers": st.integers(1, 8),
    "model.dropout": st.floats(0.0, 0.99),
    "model.activation": st.sampled_from(["tanh", "relu"]),
    "data.val_fraction": st.floats(0.0, 0.5),
    "data.batch_size": st.integers(1, 512),
    "train.optimizer": st.sampled_from(["adam", "sgd", "adagrad", "rmsprop"]),
    "train.lr": st.floats(1e-6, 10.0),
    "train.lr_schedule": st.sampled_from(["constant", "step", "cosine", "linear"]),
    "train.max_steps": st.none() | st.integers(1, 10**7),
    "train.max_minutes": st.none() | st.floats(0.01, 1e4),
    "train.seed": st.integers(0, 2**63 - 1),
})


@settings(max_examples=200, deadline=None)
@given(values=configs)
def test_resolved_config_round_trips(values):
    cfg = load_config(None, [f"{k}={v!r}" if isinstance(v, str) else f"{k}={'null' if v is None else repr(v)}" for k, v in values.items()])
    for key, value in values.items():
        section, name = key.split(".")
        assert getattr(getattr(cfg, section), name) == value
    again = Config.from_dict(yaml.safe_load(cfg.to_yaml()), name=cfg.name)
    assert again == cfg
