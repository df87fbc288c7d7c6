"""The recipes (charlm/training/recipes.py): --minutes on the machine and the corpus, the fine-tuning recipe,
and the shipped configs that --minutes picks on the reference machine."""

import types

import numpy as np
import pytest

from charlm.config import Config, TrainConfig, load_config
from charlm.text.corpus import Corpus, load_corpus
from charlm.training.recipes import BASE, CANDIDATES, LONG_CANDIDATES, MIN_STEPS, choose, finetune_recipe, merge, tier


def test_the_time_budget_rule_takes_the_largest_model_that_makes_enough_steps(corpus_file):

    small = load_corpus(corpus_file)  # the fake timings never train: a corpus of Shakespeare's size
    corpus = Corpus(np.zeros(1_115_394, small.ids.dtype), small.vocab, small.fingerprint)
    times = {128: 0.02, 256: 0.05, 384: 0.1, 512: 0.2}  # seconds per step by hidden size, per layer

    def fake(raw):  # and proportional to the characters in a batch, so the tier's batch and window count
        chars = raw["data"]["batch_size"] * raw["data"]["seq_length"] / 2500
        return times[raw["model"]["hidden_size"]] * raw["model"]["num_layers"] * chars

    def expected(minutes):
        overrides, candidates = tier(minutes)
        steps = {n: int(60 * minutes * 0.95 / fake(merge(BASE, overrides, o))) for n, o in candidates}
        fits = [n for n, _ in candidates if steps[n] >= MIN_STEPS]
        return fits[-1] if fits else candidates[0][0]

    for minutes in (2, 10, 60):  # each candidate once, from the smallest to the largest
        names, secs = zip(*[(n, fake(merge(BASE, o))) for n, o in tier(minutes)[1]])
        assert len(set(names)) == len(names) and list(secs) == sorted(secs)
    for minutes in (0.5, 2, 5, 10, 20, 30, 120):
        c = choose(corpus, minutes, measure=fake)
        overrides, candidates = tier(minutes)  # timed with the batch and window it will train with
        assert [s for _, s, _ in c.measured] == [fake(merge(BASE, overrides, o)) for _, o in candidates]
        assert c.name == expected(minutes) and c.steps == int(60 * minutes * 0.95 / c.seconds_per_step)
        cfg = Config.from_dict(c.config)
        assert cfg.train.max_steps == c.steps and cfg.train.max_minutes == minutes
        assert (cfg.train.lr_schedule, cfg.train.cooldown) == ("linear", 0.2)
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
    from charlm.text.corpus import Corpus
    from charlm.training.recipes import MAX_PASSES, MIX_MAX_CHARS, choose

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
    from charlm.text.corpus import Corpus
    from charlm.training.recipes import FINETUNE_DROPOUT, FINETUNE_PASSES

    small = load_corpus(corpus_file)
    corpus = Corpus(np.zeros(200_000, small.ids.dtype), small.vocab, small.fingerprint)
    source = Config.from_dict({"model": {"hidden_size": 96, "num_layers": 3, "dropout": 0.1}})
    free = Config.from_dict(finetune_recipe(source, corpus).config)
    assert (free.model.hidden_size, free.model.num_layers) == (96, 3)
    assert free.model.dropout == FINETUNE_DROPOUT  # 30 passes: more dropout than the source's 0.1
    assert free.train.max_steps == int(FINETUNE_PASSES * 180_000 / (free.data.batch_size * free.data.seq_length))
    assert free.train.max_minutes is None and free.train.patience is None and free.model.ngram_order == 5
    timed = Config.from_dict(finetune_recipe(source, corpus, minutes=1, measure=lambda raw: 0.5).config)
    assert timed.train.max_steps == int(60 * 0.95 / 0.5) and timed.train.max_minutes == 1
    assert timed.model.dropout == 0.1  # 114 steps, about 1.3 passes: the source's own


@pytest.mark.parametrize("name, minutes", [("lstm-1min.yaml", 1), ("lstm-shakespeare.yaml", 10),
                                           ("lstm-60min.yaml", 60)])
def test_a_shipped_config_is_what_minutes_picks_on_the_reference_machine(shakespeare, name, minutes):
    """One source for each recipe: the rule. A config file is the rule's choice for its budget,
    given the step time of the reference machine (implied by the file's max_steps); only the
    evaluation and checkpoint cadence may differ."""
    from tests.helpers import ROOT

    shipped = load_config(ROOT / "configs" / name)
    chosen = f"lstm {shipped.model.num_layers}x{shipped.model.hidden_size}"
    names = [n for n, _ in tier(minutes)[1]]
    pace = 60 * minutes * 0.95 / (shipped.train.max_steps + 0.5)  # the reference machine's seconds per step

    def reference(raw):  # the chosen size at the reference pace; every larger one too slow for the budget
        n = f"lstm {raw['model']['num_layers']}x{raw['model']['hidden_size']}"
        return pace if names.index(n) <= names.index(chosen) else 1e9

    choice = choose(load_corpus(shakespeare), minutes, measure=reference)
    picked = Config.from_dict(choice.config, name=shipped.name)
    cadence = {"eval_every": shipped.train.eval_every, "checkpoint_every": shipped.train.checkpoint_every}
    picked.train = TrainConfig(**{**picked.train.__dict__, **cadence})
    assert choice.name == chosen and picked == shipped


def test_no_mixture_for_a_vocabulary_too_large_to_index_its_5_grams(corpus_file):
    from charlm.text.vocab import Vocab

    small = load_corpus(corpus_file)
    huge = Vocab(chr(0x4E00 + i) for i in range(7000))  # 7,000 characters: 7000**5 > 2**62
    fake = lambda raw: 0.01
    assert Config.from_dict(choose(Corpus(small.ids, huge, small.fingerprint), 1, measure=fake).config).model.ngram_order == 0
    assert Config.from_dict(choose(small, 1, measure=fake).config).model.ngram_order == 5


@pytest.mark.parametrize("workers, batches", [(3, (33, 51, 33)), (4, (32, 48, 32)), (7, (35, 49, 35))])
def test_the_recipes_batch_is_shared_equally_by_the_workers(corpus_file, workers, batches):
    """--minutes and --from with --workers N: the chosen batch is the nearest multiple of N,
    and the candidates are timed with it."""
    corpus = load_corpus(corpus_file)
    seen = []

    def fake(raw):
        seen.append(raw["data"]["batch_size"])
        return 0.01

    w = types.SimpleNamespace(size=workers)
    short, mid = (Config.from_dict(choose(corpus, m, measure=fake, workers=w).config) for m in (1, 10))
    source = Config.from_dict({"model": {"num_layers": 1, "hidden_size": 16}})
    tuned = Config.from_dict(finetune_recipe(source, corpus, minutes=1, measure=fake, workers=w).config)
    assert (short.data.batch_size, mid.data.batch_size, tuned.data.batch_size) == batches
    assert set(seen) == {batches[0], batches[1]}


@pytest.mark.parametrize("how", ["minutes", "from"])
def test_minutes_and_from_count_passes_over_the_users_own_validation_split(tmp_path, monkeypatch, how):
    """``--set data.val_fraction`` reaches the recipe before it sizes its passes: the schedule
    makes its passes over the training split the run will have, not the default's."""
    from charlm.text.corpus import split_sizes
    from charlm.text.sources import CorpusSource
    from charlm.training import plan as planning
    from charlm.training.recipes import FINETUNE_PASSES, MAX_PASSES
    from tests.helpers import random_text

    path = tmp_path / "corpus.txt"
    path.write_text(random_text(60_000, seed=3, alphabet="abcdefgh \n"), encoding="utf-8")
    fake = lambda raw: 0.01 * raw["model"]["num_layers"] * raw["model"]["hidden_size"] / 128
    real = planning.choose
    monkeypatch.setattr(planning, "choose", lambda *a, **k: real(*a, **k, measure=fake))
    options = {"minutes": 10} if how == "minutes" else {"source": "bundled"}
    passes = MAX_PASSES if how == "minutes" else FINETUNE_PASSES
    steps = {}
    for fraction in (0.1, 0.5):
        cfg = planning.plan(CorpusSource((str(path),)), None, [f"data.val_fraction={fraction}"],
                            out_dir=tmp_path / f"{how}{fraction}", **options).trainer.config
        assert cfg.data.val_fraction == fraction
        train_chars = split_sizes(60_000, fraction)[0]
        steps[fraction] = cfg.train.max_steps
        assert steps[fraction] == int(passes * train_chars / (cfg.data.batch_size * cfg.data.seq_length))
    assert steps[0.5] < steps[0.1]
