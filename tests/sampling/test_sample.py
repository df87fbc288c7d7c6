"""Generation (use/sample.py): sample scores, stop strings, batches, nucleus, beam search, best-of."""

import itertools

import numpy as np
import pytest

from charlm.config import ModelConfig
from charlm.errors import CharlmError
from charlm.network.model import Model
from charlm.text.vocab import Vocab
from charlm.use.sample import beam_search, generate, keep_best, sample
from charlm.use.score import score_texts
from tests.helpers import CELL_VOCAB

VOCAB = Vocab("\nabc")


@pytest.fixture
def model():
    m = Model(ModelConfig(type="lstm", hidden_size=12, num_layers=2, dtype="float64"), len(VOCAB))
    m.init(np.random.default_rng(0))
    m.flat *= 3  # sharper distributions than at init
    return m

def test_sample_log_prob_is_the_models_score_of_its_text(model):
    samples = generate(model, VOCAB, "ab", 40, n=3, temperature=0.7, top_k=3, seed=1)
    assert len({s.text for s in samples}) == 3
    for s, ref in zip(samples, score_texts(model, VOCAB, [s.text for s in samples], context="ab")):
        assert s.log_prob_nats == pytest.approx(ref.log_prob_nats, rel=1e-9)

def test_stop_string_ends_and_is_left_out(model):
    samples = generate(model, VOCAB, "a", 300, n=20, seed=2, stop="cb")
    stopped = [s for s in samples if s.stopped]
    assert stopped and all("cb" not in s.text for s in stopped)
    for s in stopped:
        assert s.log_prob_nats == pytest.approx(score_texts(model, VOCAB, [s.text], context="a")[0].log_prob_nats
                                                if s.text else 0.0, rel=1e-9)
    for s in samples:
        assert s.stopped or len(s.text) == 300
    streamed = []
    [one] = generate(model, VOCAB, "a", 300, seed=2, stop="cb", on_text=streamed.append)
    assert "".join(streamed) == one.text == generate(model, VOCAB, "a", 300, seed=2, stop="cb")[0].text

def test_batch_of_one_is_the_first_of_a_batch_with_greedy(model):
    [g] = generate(model, VOCAB, "a", 30, greedy=True)
    assert all(s.text == g.text for s in generate(model, VOCAB, "a", 30, n=4, greedy=True))
    assert generate(model, VOCAB, "a", 30, top_p=1e-9, seed=5)[0].text == g.text  # nucleus of one: greedy

def test_nucleus_draws_only_from_the_top_p_set_in_proportion(model):
    from charlm.use.sample import _Run

    with model.inference():
        e, _ = _Run(model, VOCAB, "ab", 1).next()
    p = (e / e.sum(axis=0))[:, 0]
    order = np.argsort(-p)
    top_p = float(p[order[0]] + 0.5 * p[order[1]])  # needs the two most likely characters
    draws = generate(model, VOCAB, "ab", 1, n=6000, top_p=top_p, seed=0)
    counts = {c: sum(s.text == c for s in draws) for c in VOCAB.chars}
    allowed = {VOCAB.chars[i] for i in order[:2]}
    assert {c for c, k in counts.items() if k} == allowed
    first = VOCAB.chars[order[0]]
    want = p[order[0]] / (p[order[0]] + p[order[1]])
    assert abs(counts[first] / 6000 - want) < 0.03

def test_beam_search_as_wide_as_every_sequence_is_exact(model):
    """With a width >= V^L, beam search keeps every sequence: it must find the most likely."""
    L = 3
    best = max((score_texts(model, VOCAB, ["".join(t)], context="a")[0].log_prob_nats, "".join(t))
               for t in itertools.product(VOCAB.chars, repeat=L))
    got = beam_search(model, VOCAB, "a", L, width=len(VOCAB) ** L)
    assert got.text == best[1] and got.log_prob_nats == pytest.approx(best[0], rel=1e-9)
    narrow = beam_search(model, VOCAB, "a", L, width=1)
    assert narrow.text == generate(model, VOCAB, "a", L, greedy=True)[0].text

def test_beam_search_with_a_stop_string_scores_what_it_keeps(model):
    got = beam_search(model, VOCAB, "a", 40, width=6, stop="cc")
    assert "cc" not in got.text
    want = score_texts(model, VOCAB, [got.text], context="a")[0].log_prob_nats if got.text else 0.0
    assert got.log_prob_nats == pytest.approx(want, rel=1e-9)
    plain = beam_search(model, VOCAB, "a", 40, width=6)
    assert plain.log_prob_nats == pytest.approx(score_texts(model, VOCAB, [plain.text], context="a")[0].log_prob_nats,
                                                rel=1e-9)

def test_keep_best_takes_the_lowest_bits_per_char_of_each_group(model):
    s = generate(model, VOCAB, "a", 20, n=6, seed=3)
    kept = keep_best(s, 3)
    assert kept == [min(s[:3], key=lambda x: x.bits_per_char), min(s[3:], key=lambda x: x.bits_per_char)]


def test_sample_yields_each_character_as_it_is_drawn(model):
    """A lazy iterator: the first character comes before the rest are generated."""
    from charlm.use.sample import sample

    it = sample(model, VOCAB, 10_000, prime="a", seed=4)
    first = [next(it) for _ in range(5)]
    it.close()  # 9,995 characters never generated
    assert "".join(first) == generate(model, VOCAB, "a", 5, seed=4)[0].text


# ---- every cell: seeds, greedy, temperature, arguments ----

def test_same_seed_same_text(cell_model):
    a = "".join(sample(cell_model, CELL_VOCAB, 200, prime="ab", seed=3))
    b = "".join(sample(cell_model, CELL_VOCAB, 200, prime="ab", seed=3))
    c = "".join(sample(cell_model, CELL_VOCAB, 200, prime="ab", seed=4))
    assert a == b != c and len(a) == 200 and set(a) <= set(CELL_VOCAB.chars)


def test_greedy_is_argmax_and_top_k_one_is_greedy(cell_model):
    g = "".join(sample(cell_model, CELL_VOCAB, 50, prime="a", greedy=True))
    assert g == "".join(sample(cell_model, CELL_VOCAB, 50, prime="a", top_k=1, seed=9))
    # greedy follows the cell_model's most probable next character
    ids = CELL_VOCAB.encode("a" + g).astype(np.int64)
    logits, _ = cell_model.forward(ids[:-1, None], cell_model.zero_state(1))
    assert (logits.argmax(axis=0) == ids[1:]).all()


def test_temperature_towards_zero_approaches_greedy(cell_model):
    greedy = "".join(sample(cell_model, CELL_VOCAB, 60, greedy=True))
    assert "".join(sample(cell_model, CELL_VOCAB, 60, temperature=1e-4, seed=1)) == greedy
    assert "".join(sample(cell_model, CELL_VOCAB, 60, temperature=5.0, seed=1)) != greedy


@pytest.mark.parametrize("kw, message", [({"temperature": 0}, "temperature"), ({"length": -1}, "length"),
                                         ({"top_k": 0}, "top_k"), ({"top_p": 1.5}, "top_p"), ({"temperature": float("nan")}, "temperature"), ({"prime": "xyz"}, "'x'.*'y'.*'z'")])
def test_bad_sampling_arguments(cell_model, kw, message):
    with pytest.raises(CharlmError, match=message):
        list(sample(cell_model, CELL_VOCAB, **{"length": 5, **kw}))

