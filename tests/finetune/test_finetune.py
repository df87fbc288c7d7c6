"""Fine-tuning (charlm train --from) end to end through the installed script, and the grown
weights (charlm/training/finetune.py) in the library."""

import hashlib
import os
import signal
import time

import numpy as np
import pytest

from charlm.config import load_config
from charlm.errors import ConfigError
from charlm.predict.checkpoint import load_checkpoint
from charlm.predict.mixture import Mixture
from charlm.text.corpus import load_corpus, split
from charlm.training import finetune
from tests.helpers import CHARLM, ENV, charlm, one_error_line, random_text

NEW_TEXT = ("Hello, World! 123 (four) 5678; \"quoted\" ünïcödé\n" * 60) + random_text(2500, seed=7)
SOURCE_SETS = ["--set", "model.hidden_size=24", "--set", "model.num_layers=2", "--set", "data.batch_size=8",
               "--set", "data.seq_length=16", "--set", "train.max_steps=60", "--set", "train.eval_every=20"]
LONG = ["--set", "train.max_steps=300", "--set", "train.checkpoint_every=2", "--set", "train.eval_every=50",
        "--set", "train.patience=null", "--set", "model.dropout=0.1", "-q"]


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    d = tmp_path_factory.mktemp("source")
    (d / "old.txt").write_text(("hero hell hole hello\n" * 300) + random_text(3000, seed=1), encoding="utf-8")
    r = charlm("train", d / "old.txt", "--out", d / "run", "-q", *SOURCE_SETS)
    assert r.returncode == 0, r.stderr
    (d / "new.txt").write_text(NEW_TEXT, encoding="utf-8")
    return d / "run" / "best.npz", d / "new.txt"


def test_finetuning_grows_the_vocabulary_records_lineage_and_leaves_the_source_alone(source, tmp_path):
    src, new = source
    before = sha(src)
    r = charlm("train", new, "--from", src, "--out", tmp_path / "ft")
    assert r.returncode == 0, r.stderr
    assert f"fine-tuning lstm 2x24 from {src}" in r.stdout and "at most 30 passes" in r.stdout
    assert sha(src) == before
    old, ck = load_checkpoint(src), load_checkpoint(tmp_path / "ft" / "last.npz")
    added = sorted(set(NEW_TEXT) - set(old.vocab.chars))
    assert "ü" in added and "1" in added
    assert ck.vocab.chars == old.vocab.chars + tuple(added)  # old ids kept, new ones appended in order
    assert (ck.config.model.hidden_size, ck.config.model.num_layers) == (24, 2)
    lin = ck.meta["lineage"]
    assert lin["source"] == str(src) and lin["sha256"] == before and lin["step"] == old.meta["step"]
    assert lin["added_chars"] == "".join(added) and lin["corpus"] == old.meta["corpus"]
    assert ck.params["l0/Wx"].shape[1] == len(ck.vocab)
    info = charlm("info", tmp_path / "ft")
    assert f"fine-tuned from {src} (sha256 {before[:12]}, step {old.meta['step']:,}; {len(added)} characters added)" \
        in info.stdout
    scored = charlm("score", "Hello, World! 12 ünïcödé", "-c", tmp_path / "ft")
    assert scored.returncode == 0 and "bits/char" in scored.stdout, scored.stderr
    sampled = charlm("sample", "-c", tmp_path / "ft", "-n", "200", "--seed", "1")
    assert sampled.returncode == 0 and len(sampled.stdout) > 100, sampled.stderr
    # A fine-tuned model is a source like any other: a second generation records the first.
    r2 = charlm("train", new, "--from", tmp_path / "ft", "--out", tmp_path / "ft2", "--set", "train.max_steps=3", "-q")
    assert r2.returncode == 0, r2.stderr
    assert load_checkpoint(tmp_path / "ft2" / "last.npz").meta["lineage"]["parent"] == lin


def test_a_finetuned_run_resumes_exactly(source, tmp_path):
    """SIGINT mid-run, --resume: the final weights equal an uninterrupted fine-tuning's bit for bit."""
    import subprocess

    src, new = source
    ref = charlm("train", new, "--from", src, "--out", tmp_path / "ref", *LONG, timeout=300)
    assert ref.returncode == 0, ref.stderr
    p = subprocess.Popen([CHARLM, "train", str(new), "--from", str(src), "--out", str(tmp_path / "run"), *LONG],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **ENV})
    t = time.time()
    while not (tmp_path / "run" / "last.npz").exists():
        assert time.time() - t < 60
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err.decode()
    step = load_checkpoint(tmp_path / "run" / "last.npz").meta["step"]
    assert 0 < step < 300
    r = charlm("train", new, "--resume", tmp_path / "run", timeout=300)
    assert r.returncode == 0, r.stderr
    a, b = load_checkpoint(tmp_path / "ref" / "last.npz"), load_checkpoint(tmp_path / "run" / "last.npz")
    assert a.meta["step"] == b.meta["step"] == 300 and a.meta["lineage"] == b.meta["lineage"]
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])


@pytest.mark.parametrize("args, code, says", [
    (["--from", "{new}"], 1, "not a charlm checkpoint"),
    (["--from", "{tmp}/missing.npz"], 1, "checkpoint not found"),
    (["--from", "{src}", "--set", "model.hidden_size=32"], 1, "model.hidden_size is 32 but the source model's is 24"),
    (["--from", "{src}", "--set", "model.type=gru"], 1, "model.type is 'gru' but the source model's is 'lstm'"),
    (["--from", "{src}", "--resume", "auto"], 2, "--from starts a new run from a model and --resume continues a run"),
])
def test_finetuning_refuses_bad_input_in_one_line(source, tmp_path, args, code, says):
    src, new = source
    args = [a.format(new=new, src=src, tmp=tmp_path) for a in args]
    line = one_error_line(charlm("train", new, "--out", tmp_path / "x", *args), code)
    assert says in line
    assert not (tmp_path / "x").exists()


def test_new_characters_start_at_their_frequency(source, tmp_path):
    src, new = source
    ck = finetune.open_source(str(src))
    corpus = finetune.encode_for(ck, load_corpus(new))
    cfg = load_config(None, [f"model.hidden_size={ck.config.model.hidden_size}"], base=ck.config)
    start = finetune.start(ck, corpus, cfg)
    V0, V = len(ck.vocab), len(corpus.vocab)
    for name, a in ck.params.items():  # the source's weights are where they were
        got = start.params[name]
        np.testing.assert_array_equal(got[:, :V0] if name == "l0/Wx" else got[:V0] if name.startswith("head") else got, a)
    np.testing.assert_allclose(start.params["l0/Wx"][:, V0:], ck.params["l0/Wx"].mean(axis=1, keepdims=True)
                               .repeat(V - V0, axis=1), rtol=1e-6)
    assert not start.params["head/W"][V0:].any()
    model = ck.build_model().__class__(cfg.model, V)
    for name, a in start.params.items():
        model.params[name][...] = a
    train, _ = split(corpus.ids, cfg.data.val_fraction)
    with model.inference():
        logits, _ = model.forward(train[:2000, None].astype(np.int64), model.zero_state(1))
    p = np.exp(logits - logits.max(axis=0))
    p /= p.sum(axis=0)
    freq = np.bincount(train, minlength=V)[V0:] / len(train)
    seen = freq > 0.005
    ratio = p[V0:].mean(axis=1)[seen] / freq[seen]  # the model's average probability of each new character
    assert np.all((ratio > 0.5) & (ratio < 2.0)), ratio


def test_a_size_change_is_a_config_error_naming_the_key(source):
    src, _ = source
    ck = finetune.open_source(str(src))
    with pytest.raises(ConfigError, match="model.num_layers is 3"):
        finetune.check_same_size(load_config(None, ["model.num_layers=3"], base=ck.config), ck)
    finetune.check_same_size(load_config(None, ["model.dropout=0.3", "model.ngram_order=3"], base=ck.config), ck)


def test_a_finetuned_small_corpus_model_is_a_mixture(source, tmp_path):
    src, new = source
    assert charlm("train", new, "--from", src, "--out", tmp_path / "ft", "-q").returncode == 0
    ck = load_checkpoint(tmp_path / "ft" / "best.npz")
    assert ck.config.model.ngram_order == 5 and isinstance(ck.build_predictor(), Mixture)


def test_the_report_of_a_finetuned_run_shows_its_lineage_and_mixture(source, tmp_path, browser):
    from charlm.see.report import render, report_data

    src, new = source
    assert charlm("train", new, "--from", src, "--out", tmp_path / "ft", "-q").returncode == 0
    d = report_data(tmp_path / "ft", chars=300)
    assert d["lineage"].startswith(f"fine-tuned from {src} (sha256 {sha(src)[:12]}")
    assert d["mixture"].startswith("mixed with a 5-gram of its training text (weight ")
    page_file = tmp_path / "report.html"
    page_file.write_text(render(d), encoding="utf-8")
    page = browser.new_page()
    page.goto(page_file.as_uri())
    summary = page.locator("#summary").inner_text()
    page.close()
    assert "fine-tuned from" in summary and "mixed with a 5-gram" in summary
