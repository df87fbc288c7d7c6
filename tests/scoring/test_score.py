"""Scoring (use/score.py) on every cell: the sum of conditional log-probabilities, batching,
the chain rule, unknown characters, evaluation."""

import math

import numpy as np
import pytest

from charlm.errors import CharlmError, VocabError
from charlm.use.score import evaluate, score_texts
from tests.helpers import CELL_VOCAB


def test_score_matches_sum_of_conditional_log_probs(cell_model):
    text = "abba cab"
    [s] = score_texts(cell_model, CELL_VOCAB, [text], context="\n")
    ids = CELL_VOCAB.encode("\n" + text).astype(np.int64)
    nll, _ = cell_model.nll(ids[:-1, None], ids[1:, None], cell_model.zero_state(1))
    assert s.log_prob_nats == pytest.approx(-nll.sum(), rel=1e-12)
    assert s.chars == 8 and s.bits_per_char == pytest.approx(nll.sum() / 8 / math.log(2))
    assert s.perplexity == pytest.approx(math.exp(nll.mean()))


def test_batched_scoring_equals_one_at_a_time(cell_model):
    texts = ["a", "abcdefgh", "hhh ggg", "ab\ncd", "b" * 40]
    together = score_texts(cell_model, CELL_VOCAB, texts, batch_size=3, window=7)
    for t, s in zip(texts, together):
        [alone] = score_texts(cell_model, CELL_VOCAB, [t])
        assert s.log_prob_nats == pytest.approx(alone.log_prob_nats, rel=1e-10)


def test_chain_rule(cell_model):
    """log p(a+b) = log p(a) + log p(b | a)."""
    a, b = "abc", "hg fe"
    [ab] = score_texts(cell_model, CELL_VOCAB, [a + b])
    [pa] = score_texts(cell_model, CELL_VOCAB, [a])
    [pb] = score_texts(cell_model, CELL_VOCAB, [b], context="\n" + a)
    assert ab.log_prob_nats == pytest.approx(pa.log_prob_nats + pb.log_prob_nats, rel=1e-10)


def test_unknown_characters(cell_model):
    with pytest.raises(VocabError, match="'X'.*unknown='skip' leaves them out"):
        score_texts(cell_model, CELL_VOCAB, ["abXc"])
    [s] = score_texts(cell_model, CELL_VOCAB, ["abXcY"], unknown="skip")
    assert s.skipped == 2 and s.chars == 3
    with pytest.raises(CharlmError, match="empty"):
        score_texts(cell_model, CELL_VOCAB, [""])


def test_evaluate_is_mean_nll(cell_model):
    ids = CELL_VOCAB.encode("abcdefgh \n" * 30)
    v = evaluate(cell_model, ids, batch_size=1, seq_length=1000)
    x = ids[:-1].astype(np.int64)[:, None]
    nll, _ = cell_model.nll(x, ids[1:].astype(np.int64)[:, None], cell_model.zero_state(1))
    assert v == pytest.approx(nll.mean(), rel=1e-10)
