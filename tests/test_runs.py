"""The library behind run management and generation: memory estimate, early stopping, the
corpus fingerprint, budgets, beam search, nucleus sampling, sample scores, novelty, echoes."""

import itertools
import math
import time
import tracemalloc

import numpy as np
import pytest

from charlm.audit import audit
from charlm.config import Config, ModelConfig, TrainConfig, load_config
from charlm.data import load_corpus
from charlm.errors import ConfigError, RunExistsError, TrainingError, echo
from charlm.memory import MemoryEstimate, check_fits
from charlm.model import Model
from charlm.novelty import longest_copied
from charlm.sample import beam_search, generate, keep_best
from charlm.schedule import Budget
from charlm.score import score_texts
from charlm.train import CorpusMismatchError, Trainer, train
from charlm.vocab import Vocab

from .conftest import random_text, tiny_overrides

VOCAB = Vocab("\nabc")


@pytest.fixture
def model():
    m = Model(ModelConfig(type="lstm", hidden_size=12, num_layers=2, dtype="float64"), len(VOCAB))
    m.init(np.random.default_rng(0))
    m.flat *= 3  # sharper distributions than at init
    return m


@pytest.mark.parametrize("kind, H, L, dropout", [("lstm", 96, 2, 0.2), ("gru", 64, 3, 0.0), ("rnn", 200, 1, 0.0)])
def test_memory_estimate_matches_what_a_run_allocates(corpus_file, tmp_path, kind, H, L, dropout):
    cfg = load_config(None, [f"model.type={kind}", f"model.hidden_size={H}", f"model.num_layers={L}",
                             f"model.dropout={dropout}", "data.batch_size=8", "data.seq_length=32"])
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


def test_check_fits_names_both_numbers():
    est = MemoryEstimate({"parameters and gradients": 3_000_000_000, "corpus": 1000})
    with pytest.raises(TrainingError, match=r"needs about 3.0 GB of memory but 1.0 GB is available \(largest part: "
                                            r"parameters and gradients, 3.0 GB\)"):
        check_fits(est, available=1_000_000_000)
    check_fits(est, available=4_000_000_000)


def test_budget_answers_total_and_spent():
    b = Budget(TrainConfig(max_steps=100, epochs=2, max_minutes=1.0), steps_per_epoch=30)
    assert b.total_steps == 60
    assert b.spent(59, 0.0) is None and b.spent(60, 0.0) == "epochs" and b.spent(10, 61.0) == "max_minutes"
    b = Budget(TrainConfig(max_steps=50, epochs=2, patience=3), steps_per_epoch=30)
    assert b.total_steps == 50 and b.spent(50, 0) == "max_steps" and b.spent(5, 0, stale_evals=3) == "early_stopping"


def test_recorded_lr_is_the_one_the_step_used(corpus_file, tmp_path):
    cfg = load_config(None, tiny_overrides(**{"train.lr_schedule": "step", "train.lr_decay": 0.5, "train.epochs": 3,
                                              "train.max_steps": "null", "train.eval_every": 1}))
    tr = Trainer(cfg, corpus_file, tmp_path / "r")
    used = []
    real = tr.optimizer.step
    tr.optimizer.step = lambda g, lr: (used.append(lr), real(g, lr))
    tr.run()
    lrs = [__import__("json").loads(l)["lr"] for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert lrs == used and len(set(lrs)) == 3


def test_new_run_refuses_a_run_directory_unless_overwrite(corpus_file, tmp_path):
    cfg = load_config(None, tiny_overrides(**{"train.max_steps": 10}))
    train(cfg, corpus_file, tmp_path / "r")
    with pytest.raises(RunExistsError, match="already holds a run \\(step 10, best val"):
        train(cfg, corpus_file, tmp_path / "r")
    assert train(cfg, corpus_file, tmp_path / "r", overwrite=True).step == 10


def test_fine_tuning_on_a_new_corpus_starts_its_first_window(corpus_file, tmp_path):
    cfg = load_config(None, tiny_overrides(**{"train.max_steps": 13}))
    train(cfg, corpus_file, tmp_path / "r")
    other = tmp_path / "other.txt"
    other.write_text("hello hero hole\n" * 300, encoding="utf-8")
    with pytest.raises(CorpusMismatchError, match="allow_new_corpus=True"):
        Trainer.resume(tmp_path / "r", other)
    tr = Trainer.resume(tmp_path / "r", other, allow_new_corpus=True)
    assert tr.state.batch == 0 and tr.hidden is None and tr.state.step == 13
    assert tr.events[0]["previous"]["path"] == str(corpus_file) and tr.events[0]["corpus"]["chars"] == 16 * 300


def test_early_stopping_counts_evaluations_without_min_delta(corpus_file, tmp_path):
    cfg = load_config(None, tiny_overrides(**{"train.max_steps": 500, "train.eval_every": 5, "train.patience": 3,
                                              "train.min_delta": 0.01, "train.lr": 1e-7}))
    res = train(cfg, corpus_file, tmp_path / "r")
    assert res.reason == "early_stopping" and res.step == 20  # reference at 5, then 10, 15, 20 without 0.01
    again = Trainer.resume(tmp_path / "r", corpus_file).run()  # a stopped run stays stopped
    assert again.step == 20 and again.reason == "early_stopping"


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
    from charlm.sample import _Run

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


@pytest.mark.parametrize("seed", range(20))
def test_longest_copied_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    corpus = "".join(rng.choice(list("abc"), 60))
    sample = "".join(rng.choice(list("abcd"), 25))
    want = max(j - i for i in range(len(sample)) for j in range(i, len(sample) + 1) if sample[i:j] in corpus)
    got = longest_copied(sample, corpus)
    assert got.length == want and got.text in sample and corpus[got.offset : got.offset + want] == got.text


def test_audit_counts_and_flags(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("\ufeffaa\r\nb\u200bb\x1b" + "a" * 10, encoding="utf-8")
    rows = {c.char: c for c in audit(load_corpus(p))}
    assert rows["a"].count == 12 and rows["a"].flags == []
    assert rows["\ufeff"].flags[0] == "byte-order mark" and rows["\r"].flags[0].startswith("carriage return")
    assert rows["\u200b"].flags[0] == "zero-width space" and rows["\x1b"].flags[0] == "control character"
    assert rows["\n"].flags == ["rare (fewer than 5)"]


def test_echo_is_short_and_fast_on_any_value():
    lol = ["lol"] * 9
    for _ in range(30):  # 9**30 leaves if walked
        lol = [lol] * 9
    t0 = time.perf_counter()
    for value in [lol, "x" * 10_000_000, list(range(10**6)), {"k" * 10**6: 1}, 10**5000]:
        assert len(echo(value)) <= 60
    assert time.perf_counter() - t0 < 0.5


def test_config_errors_echo_a_short_prefix(tmp_path):
    lol = ["lol"] * 9
    for _ in range(30):
        lol = [lol] * 9
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        Config.from_dict({"model": {"hidden_size": lol}})
    assert len(str(e.value)) < 200 and time.perf_counter() - t0 < 0.5
    with pytest.raises(ConfigError, match="config file is 2,000,0"):
        p = tmp_path / "big.yaml"
        p.write_text("#" * 2_000_000)
        load_config(p)
    with pytest.raises(ConfigError, match="train.lr_schedule cosine needs train.max_steps or train.epochs"):
        Config.from_dict({"train": {"lr_schedule": "cosine", "epochs": None}})



def test_kneser_ney_is_a_distribution_and_beats_unigram():
    from charlm.baseline import baseline
    from charlm.ngram import KneserNey

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


def test_the_time_budget_rule_takes_the_largest_model_that_makes_enough_steps(corpus_file):
    from charlm.autoconfig import BASE, CANDIDATES, LONG_CANDIDATES, MIN_STEPS, _merge, choose, tier
    from charlm.data import Corpus, load_corpus

    small = load_corpus(corpus_file)  # the fake timings never train: a corpus of Shakespeare's size
    corpus = Corpus(np.zeros(1_115_394, small.ids.dtype), small.vocab, small.fingerprint)
    times = {128: 0.02, 256: 0.05, 384: 0.1, 512: 0.2}  # seconds per step by hidden size, per layer

    def fake(raw):  # and proportional to the characters in a batch, so the tier's batch and window count
        chars = raw["data"]["batch_size"] * raw["data"]["seq_length"] / 2500
        return times[raw["model"]["hidden_size"]] * raw["model"]["num_layers"] * chars

    def expected(minutes):
        overrides, candidates = tier(minutes)
        steps = {n: int(60 * minutes * 0.95 / fake(_merge(BASE, overrides, o))) for n, o in candidates}
        fits = [n for n, _ in candidates if steps[n] >= MIN_STEPS]
        return fits[-1] if fits else candidates[0][0]

    for minutes in (2, 10, 60):  # each candidate once, from the smallest to the largest
        names, secs = zip(*[(n, fake(_merge(BASE, o))) for n, o in tier(minutes)[1]])
        assert len(set(names)) == len(names) and list(secs) == sorted(secs)
    for minutes in (0.5, 2, 5, 10, 20, 30, 120):
        c = choose(corpus, minutes, measure=fake)
        overrides, candidates = tier(minutes)  # timed with the batch and window it will train with
        assert [s for _, s, _ in c.measured] == [fake(_merge(BASE, overrides, o)) for _, o in candidates]
        assert c.name == expected(minutes) and c.steps == int(60 * minutes * 0.95 / c.seconds_per_step)
        cfg = Config.from_dict(c.config)
        assert cfg.train.max_steps == c.steps and cfg.train.lr_schedule == "cosine" and cfg.train.max_minutes == minutes
    short, mid, long = (Config.from_dict(choose(corpus, m, measure=fake).config) for m in (2, 10, 60))
    assert (short.train.lr, short.model.dropout, short.data.batch_size, short.data.seq_length) == (0.005, 0.0, 32, 64)
    assert (mid.train.lr, mid.model.dropout, mid.data.batch_size, mid.data.seq_length) == (0.003, 0.4, 50, 50)
    assert (long.train.lr, long.model.dropout, long.model.num_layers, long.model.hidden_size) == (0.002, 0.5, 3, 512)
    assert choose(corpus, 0.01, measure=fake).name == CANDIDATES[0][0]  # nothing fits: the smallest
    assert choose(corpus, 20, measure=fake).name == CANDIDATES[-1][0]  # 3x512 only joins from 30 minutes
    assert choose(corpus, 1000, measure=fake).name == LONG_CANDIDATES[-1][0]


def test_a_config_file_and_set_override_the_chosen_config(tmp_path):
    chosen = {"model": {"hidden_size": 384, "num_layers": 2}, "train": {"max_steps": 4000, "lr": 0.003}}
    f = tmp_path / "mine.yaml"
    f.write_text("model:\n  hidden_size: 64\n")
    cfg = load_config(f, ["train.lr=0.01"], under=chosen, name="10min")
    assert cfg.model.hidden_size == 64 and cfg.model.num_layers == 2  # the file's key wins, the rest is chosen
    assert cfg.train.lr == 0.01 and cfg.train.max_steps == 4000 and cfg.name == "mine"
    assert load_config(None, [], under=chosen, name="10min").name == "10min"


def test_the_time_budget_rule_fits_the_corpus(corpus_file):
    """Many passes: a schedule of MAX_PASSES passes, dropout 0.5, early stopping; a small corpus
    gets a 5-gram mixed in, a large one does not."""
    from charlm.autoconfig import MAX_PASSES, MIX_MAX_CHARS, choose
    from charlm.data import Corpus, load_corpus

    small = load_corpus(corpus_file)

    def sized(n):
        return Corpus(np.zeros(n, small.ids.dtype), small.vocab, small.fingerprint)

    fake = lambda raw: 0.01 * raw["model"]["num_layers"] * raw["model"]["hidden_size"] / 128
    tiny = Config.from_dict(choose(sized(40_000), 10, measure=fake).config)
    steps = int(MAX_PASSES * 36_000 / (tiny.data.batch_size * tiny.data.seq_length))
    assert tiny.train.max_steps == steps and tiny.model.dropout == 0.5 and tiny.train.patience == 3
    assert tiny.model.ngram_order == 5 and tiny.model.hidden_size == 384  # 2x384 makes its few steps in time
    big = Config.from_dict(choose(sized(int(MIX_MAX_CHARS / 0.9) + 100), 10, measure=fake).config)
    assert big.model.ngram_order == 0 and big.train.patience is None and big.model.dropout == 0.4
    assert big.train.max_steps == int(600 * 0.95 / fake({"model": {"num_layers": 2, "hidden_size": 384}}))


def test_the_finetuning_recipe_keeps_the_source_model_and_fits_passes_and_budget(corpus_file):
    from charlm.autoconfig import FINETUNE_PASSES, finetune_recipe
    from charlm.data import Corpus, load_corpus

    small = load_corpus(corpus_file)
    corpus = Corpus(np.zeros(200_000, small.ids.dtype), small.vocab, small.fingerprint)
    source = Config.from_dict({"model": {"hidden_size": 96, "num_layers": 3, "dropout": 0.1}})
    free = Config.from_dict(finetune_recipe(source, corpus).config)
    assert (free.model.hidden_size, free.model.num_layers, free.model.dropout) == (96, 3, 0.1)
    assert free.train.max_steps == int(FINETUNE_PASSES * 180_000 / (free.data.batch_size * free.data.seq_length))
    assert free.train.max_minutes is None and free.train.lr < source.train.lr and free.model.ngram_order == 5
    timed = Config.from_dict(finetune_recipe(source, corpus, minutes=1, measure=lambda raw: 0.5).config)
    assert timed.train.max_steps == int(60 * 0.95 / 0.5) and timed.train.max_minutes == 1
