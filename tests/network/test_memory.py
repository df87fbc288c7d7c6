"""The memory estimate against what a run really allocates, and the refusal when it cannot fit."""

import tracemalloc

import pytest

from charlm.config import load_config
from charlm.errors import TrainingError
from charlm.network.memory import MemoryEstimate, check_fits
from charlm.text.corpus import load_corpus
from charlm.training.trainer import Trainer


@pytest.mark.parametrize("kind, H, L, noise", [
    ("lstm", 96, 2, ["model.dropout=0.2"]), ("gru", 64, 3, []), ("rnn", 200, 1, []),
    ("lstm", 96, 2, ["model.variational_dropout=0.2"]),
])
def test_memory_estimate_matches_what_a_run_allocates(corpus_file, tmp_path, kind, H, L, noise):
    cfg = load_config(None, [f"model.type={kind}", f"model.hidden_size={H}", f"model.num_layers={L}", *noise,
                             "data.batch_size=8", "data.seq_length=32"])
    corpus = load_corpus(corpus_file)  # loading has its own short-lived peak, before the run
    tracemalloc.start()
    try:
        tr = Trainer(cfg, corpus, tmp_path / "r")
        tr.train_step()
        tr.train_step()
        tr.evaluate()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    held += corpus.ids.nbytes  # counted by the estimate, allocated before tracing began
    # an upper bound (evaluation's second buffer set is counted at full size), and a close one
    assert 0.98 < tr.memory.total / held < 1.3, (tr.memory.parts, held)

def test_memory_estimate_with_an_ngram_mixture_on_real_text(shakespeare, tmp_path):
    """Kneser-Ney's tables depend on how varied the text is: measured on English, not on noise."""
    p = tmp_path / "shk.txt"
    p.write_text(shakespeare.read_text(encoding="utf-8")[:300_000], encoding="utf-8")
    cfg = load_config(None, ["model.hidden_size=32", "model.num_layers=1", "model.ngram_order=5",
                             "train.eval_chars=5000", "data.batch_size=8", "data.seq_length=32"])
    corpus = load_corpus(p)
    tracemalloc.start()
    try:
        tr = Trainer(cfg, corpus, tmp_path / "r")
        tr.train_step()
        tr.evaluate()
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    peak += corpus.ids.nbytes
    assert "n-gram model" in tr.memory.parts
    assert 0.98 < tr.memory.total / peak < 1.5, (tr.memory.parts, peak)


def test_check_fits_names_both_numbers():
    est = MemoryEstimate({"parameters and gradients": 3_000_000_000, "corpus": 1000})
    with pytest.raises(TrainingError, match=r"needs about 3.0 GB of memory but 1.0 GB is available \(largest part: "
                                            r"parameters and gradients, 3.0 GB\)"):
        check_fits(est, available=1_000_000_000)
    check_fits(est, available=4_000_000_000)
