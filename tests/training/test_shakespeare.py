"""Tests on the real corpus (fail under CI=true if it is missing, see conftest)."""

import numpy as np

from charlm.config import load_config
from charlm.text.corpus import load_corpus, split
from charlm.training.trainer import train
from tests.helpers import ROOT


def test_corpus_loads_with_65_characters(shakespeare):
    c = load_corpus(shakespeare)
    assert len(c) == 1_115_394 and len(c.vocab) == 65 and c.ids.dtype == np.uint8
    assert c.vocab.decode(c.ids[:14]) == "First Citizen:"
    tr, va = split(c.ids, 0.1)
    assert len(va) == 111_539


def test_rnn_tiny_learns_quickly(shakespeare, tmp_path):

    cfg = load_config(ROOT / "configs" / "rnn-tiny.yaml")
    res = train(cfg, shakespeare, tmp_path / "run")
    assert res.step == 200 and res.best_val < 2.6  # uniform over 65 characters is 4.17 nats
