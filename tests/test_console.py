"""Run management, generation and scripting through the real console script: the ``charlm``
executable that ``pip install`` put beside this Python, run as a user runs it."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from charlm.predict.checkpoint import load_checkpoint

from .conftest import random_text, tiny_overrides

CHARLM = shutil.which("charlm", path=str(Path(sys.executable).parent)) or shutil.which("charlm")
SETS = [x for o in tiny_overrides(**{"model.type": "rnn", "model.num_layers": 1, "model.hidden_size": 24})
        for x in ("--set", o)]


# One BLAS thread: a product's rounding depends on how many threads share it, and the tests that
# compare two runs bit for bit must run both alike (ENV for the ones they start with Popen).
ENV = {"OPENBLAS_NUM_THREADS": "1", "NO_COLOR": "1"}


def charlm(*args, input=None, cwd=None, umask=None, timeout=120):
    assert CHARLM, "the charlm console script is not installed (pip install -e .)"
    env = {**os.environ, **ENV}
    pre = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run([CHARLM, *map(str, args)], input=input, capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout, preexec_fn=pre)


def one_error_line(r, code=None):
    assert r.returncode != 0 if code is None else r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert lines and lines[-1].startswith("Error: "), r.stderr
    errors = [l for l in lines if l.startswith("Error: ")]
    assert len(errors) == 1, r.stderr
    return errors[0]


def strict_json_lines(text):
    def refuse(c):
        raise AssertionError(f"not strict JSON: {c}")

    return [json.loads(l, parse_constant=refuse) for l in text.splitlines() if l.strip()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    p = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    p.write_text(("hero hell hole hello\n" * 300) + random_text(3000, seed=1), encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def run_dir(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    r = charlm("train", corpus, "--out", out, "-q", *SETS)
    assert r.returncode == 0, r.stderr
    return out


# ---- never lose a run ----------------------------------------------------------------
def test_second_train_into_a_run_is_refused_and_changes_nothing(corpus, tmp_path):
    out = tmp_path / "run"
    assert charlm("train", corpus, "--out", out, "-q", *SETS).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    best = load_checkpoint(out / "last.npz").meta["best_val"]
    line = one_error_line(charlm("train", corpus, "--out", out, "-q", *SETS), 1)
    assert f"{out} already holds a run (step 30, best val {best:.4f} nats/char)" in line
    assert "--resume" in line and "--out" in line and "--overwrite" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    r = charlm("train", corpus, "--out", out, "-q", "--overwrite", *SETS, "--set", "train.max_steps=20")
    assert r.returncode == 0, r.stderr
    assert load_checkpoint(out / "last.npz").meta["step"] == 20
    assert [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines()] == [10, 20]


def test_the_readme_command_twice_refuses_the_second(corpus, tmp_path):
    """The default output directory, runs/<config name>, relative to where charlm runs."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("model: {type: rnn, hidden_size: 8, num_layers: 1}\ndata: {batch_size: 4, seq_length: 8}\n"
                   "train: {max_steps: 10, eval_every: 5, checkpoint_every: 5}\n")
    assert charlm("train", corpus, "--config", cfg, "-q", cwd=tmp_path).returncode == 0
    assert "runs/tiny already holds a run (step 10" in one_error_line(charlm("train", corpus, "--config", cfg, "-q", cwd=tmp_path))


def test_resume_takes_a_run_directory_and_auto(corpus, tmp_path):
    out = tmp_path / "run"
    auto = ["--resume", "auto", "--out", out, "-q", *SETS]
    r = charlm("train", corpus, *auto, "--set", "train.max_steps=10")  # nothing there yet: auto starts it
    assert r.returncode == 0 and "stopped (max_steps) at step 10" in r.stdout, r.stderr
    r = charlm("train", corpus, *auto, "--set", "train.max_steps=20")  # the same line again: continues
    assert r.returncode == 0 and "at step 20" in r.stdout, r.stderr
    r = charlm("train", corpus, "--resume", out, "-q", "--set", "train.max_steps=30")
    assert r.returncode == 0 and "at step 30" in r.stdout, r.stderr
    assert [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines()] == [10, 20, 30]
    assert "has no last.npz" in one_error_line(charlm("train", corpus, "--resume", tmp_path, "-q"))


def test_resume_on_another_corpus_needs_allow_new_corpus(corpus, run_dir, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("hole hero hello hell\n" * 400, encoding="utf-8")
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    line = one_error_line(charlm("train", other, "--resume", copy, "-q", "--set", "train.max_steps=40"), 1)
    assert f"{other} (8,400 characters, sha256" in line and f"is not the corpus this run was trained on, {corpus} (" in line
    assert "--allow-new-corpus" in line
    r = charlm("train", other, "--resume", copy, "-q", "--allow-new-corpus", "--set", "train.max_steps=40")
    assert r.returncode == 0, r.stderr
    events = [json.loads(l) for l in (copy / "metrics.jsonl").read_text().splitlines() if "event" in l]
    assert events == [{"step": 30, "event": "new_corpus", "corpus": load_checkpoint(copy / "last.npz").meta["corpus"],
                       "previous": load_checkpoint(run_dir / "last.npz").meta["corpus"]}]
    assert events[0]["corpus"]["path"] == str(other) and events[0]["corpus"]["chars"] == 8400


def test_early_stopping_says_why_and_keeps_best(corpus, tmp_path):
    out = tmp_path / "run"
    r = charlm("train", corpus, "--out", out, *SETS, "--set", "train.max_steps=1000", "--set", "train.patience=2",
               "--set", "train.min_delta=10", "--set", "train.eval_every=5")
    assert r.returncode == 0, r.stderr
    # the first evaluation sets the reference; two more without a 10-nat improvement stop it
    assert "stopped (early stopping: no validation improvement of at least train.min_delta in train.patience " \
           "evaluations; best.npz holds the best model) at step 15" in r.stdout
    assert load_checkpoint(out / "best.npz").meta["best_val"] == min(
        json.loads(l)["val_loss"] for l in (out / "metrics.jsonl").read_text().splitlines())


def test_dry_run_reports_and_writes_nothing(tmp_path):
    odd = tmp_path / "odd.txt"
    odd.write_text("\ufeffa line\r\nzero\u200bwidth \x07bell\n" + "plain text here\n" * 300, encoding="utf-8")
    r = charlm("train", odd, "--dry-run", *SETS, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for want in ["# config default (resolved)", f"corpus: {odd} (", "vocabulary: ", "byte-order mark",
                 "carriage return", "zero-width space", "control character", "rare (fewer than 5)", "parameters: ",
                 "steps per epoch: ", "memory: about ", "available", "ms per step (timed)", "per epoch",
                 "dry run: nothing trained, nothing written"]:
        assert want in r.stdout, want
    assert list(tmp_path.iterdir()) == [odd]  # no runs/ directory
    [d] = strict_json_lines(charlm("train", odd, "--dry-run", "--json", *SETS, cwd=tmp_path).stdout)
    assert d["steps_per_epoch"] > 0 and d["memory_bytes"] > 0 and d["seconds_per_epoch"] > 0
    flagged = {c["code_point"]: c["flags"] for c in d["vocabulary"] if c["flags"]}
    assert flagged["U+FEFF"][0] == "byte-order mark" and "U+000D" in flagged and "U+200B" in flagged


def test_a_model_too_big_for_memory_is_refused_before_allocating(corpus, tmp_path):
    t0 = time.perf_counter()
    r = charlm("train", corpus, "--out", tmp_path / "big", "--set", "model.hidden_size=30000",
               "--set", "model.num_layers=8")
    line = one_error_line(r, 1)
    assert time.perf_counter() - t0 < 20
    assert "this run needs about 1.5 TB of memory but" in line and "is available" in line
    assert not (tmp_path / "big").exists()


def test_checkpoints_and_metrics_follow_the_umask(corpus, tmp_path):
    out = tmp_path / "run"
    assert charlm("train", corpus, "--out", out, "-q", *SETS, umask=0o027).returncode == 0
    for name in ("last.npz", "best.npz", "metrics.jsonl"):
        assert (out / name).stat().st_mode & 0o777 == 0o640, name
    assert charlm("train", corpus, "--out", tmp_path / "r2", "-q", *SETS, umask=0o002).returncode == 0
    assert (tmp_path / "r2" / "last.npz").stat().st_mode & 0o777 == 0o664


def test_train_json_is_strict_json_lines(corpus, tmp_path):
    r = charlm("train", corpus, "--out", tmp_path / "run", "--json", *SETS)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    rows = strict_json_lines(r.stdout)
    assert [x["event"] for x in rows] == ["baseline"] + ["eval", "sample"] * 3 + ["stopped"]
    assert rows[-1]["step"] == 30 and rows[-1]["reason"] == "max_steps"
    assert {"step", "val_loss", "val_bpc", "lr", "train_loss"} <= set(rows[1])


# ---- generation ----------------------------------------------------------------------
def test_sample_batch_json_with_top_p_stop_and_best_of(run_dir):
    r = charlm("sample", "-c", run_dir, "-n", 200, "-N", 4, "--top-p", 0.9, "--seed", 3, "--json", "--stop", "\n\n")
    rows = strict_json_lines(r.stdout)
    assert len(rows) == 4 and [x["sample"] for x in rows] == [1, 2, 3, 4]
    for x in rows:
        assert set(x) == {"sample", "prime", "text", "chars", "log_prob_nats", "log_prob_bits", "bits_per_char",
                          "stopped", "checkpoint"}
        assert "\n\n" not in x["text"] and x["chars"] == len(x["text"]) and x["log_prob_nats"] <= 0
    again = strict_json_lines(charlm("sample", "-c", run_dir, "-n", 200, "-N", 4, "--top-p", 0.9, "--seed", 3, "--json",
                                     "--stop", "\n\n").stdout)
    assert again == rows
    [best] = strict_json_lines(charlm("sample", "-c", run_dir, "-n", 40, "--best-of", 8, "--seed", 5, "--json").stdout)
    cands = strict_json_lines(charlm("sample", "-c", run_dir, "-n", 40, "-N", 8, "--seed", 5, "--json").stdout)
    assert best["text"] == min(cands, key=lambda x: x["bits_per_char"])["text"]


def test_sample_beam_text_and_output_file(run_dir, tmp_path):
    r = charlm("sample", "-c", run_dir, "-n", 30, "--beam", 4, "--prime", "he")
    assert r.returncode == 0 and r.stdout.startswith("he") and len(r.stdout) == 2 + 30 + 1
    assert r.stdout == charlm("sample", "-c", run_dir, "-n", 30, "--beam", 4, "--prime", "he").stdout
    out = tmp_path / "samples.txt"
    r = charlm("sample", "-c", run_dir, "-n", 50, "-N", 3, "--seed", 1, "-o", out)
    assert r.returncode == 0 and r.stdout == "" and f"wrote 3 sample(s) to {out}" in r.stderr
    text = out.read_text()
    assert text.count("=== sample ") == 3 and "=== sample 2 of 3: " in text
    assert [p.name for p in tmp_path.iterdir()] == ["samples.txt"]  # no temporary left beside it


def test_sample_interactive(run_dir):
    r = charlm("sample", "-c", run_dir, "-i", "-n", 20, "--seed", 1, input="hero\nhole\n\nnot read\n")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) >= 2 and r.stdout.startswith("hero") and "\nhole" in r.stdout and "not read" not in r.stdout
    r = charlm("sample", "-c", run_dir, "-i", "-n", 20, "--seed", 1, "--json", input="hero\nhole")
    assert [x["prime"] for x in strict_json_lines(r.stdout)] == ["hero", "hole"]


def test_check_novel_reports_the_longest_copied_run(run_dir, corpus):
    r = charlm("sample", "-c", run_dir, "-n", 60, "--seed", 2, "--json", "--check-novel", corpus)
    [x] = strict_json_lines(r.stdout)
    n = x["novelty"]
    assert n["longest_copied"] == len(n["copied_text"]) > 0 and n["copied_text"] in x["text"]
    text = corpus.read_text()
    assert text[n["corpus_offset"] : n["corpus_offset"] + n["longest_copied"]] == n["copied_text"]
    L = n["longest_copied"]
    assert not any(x["text"][i : i + L + 1] in text for i in range(len(x["text"]) - L))  # nothing longer
    r = charlm("sample", "-c", run_dir, "-n", 60, "--seed", 2, "--check-novel", corpus)
    assert f"novelty: the longest run also in {corpus} is {n['longest_copied']} of 60 characters" in r.stderr


def test_a_closed_pipe_ends_quietly(run_dir):
    p = subprocess.Popen(f"'{CHARLM}' sample -c '{run_dir}' -n 200000 | head -c 10", shell=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         executable="/bin/bash", env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    out, err = p.communicate(timeout=120)
    assert len(out) == 10 and err == "", err
    r = subprocess.run(f"set -o pipefail; '{CHARLM}' sample -c '{run_dir}' -n 200000 | head -c 10 >/dev/null",
                       shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr


# ---- score ---------------------------------------------------------------------------
def test_score_lines_sorted_with_two_models(run_dir, tmp_path):
    lines = tmp_path / "cands.txt"
    lines.write_text("hello hero\nhhh ggg dd\nhole hell\n", encoding="utf-8")
    one = strict_json_lines(charlm("score", "--lines", lines, "-c", run_dir, "--json").stdout)
    r = charlm("score", "--lines", lines, "--sort", "-c", run_dir, "-c", run_dir / "last.npz")
    assert r.returncode == 0, r.stderr
    rows = r.stdout.splitlines()
    assert rows[0].split() == ["run/best", "run/last", "text", "(bits/char)"]
    shown = [row.split("  ")[-1].strip() for row in rows[1:]]
    assert shown == [repr(x["text"]) for x in sorted(one, key=lambda x: x["bits_per_char"])]
    assert len(set(x["bits_per_char"] for x in one)) == 3
    rows = strict_json_lines(charlm("score", "--lines", lines, "--sort", "-c", run_dir, "-c", run_dir / "last.npz",
                                    "--json").stdout)
    assert len(rows) == 6 and [r["checkpoint"] for r in rows[:2]] == [str(run_dir / "best.npz"), str(run_dir / "last.npz")]


def test_score_with_nothing_left_is_null_not_nan(run_dir):
    r = charlm("score", "ΩΩ", "-c", run_dir, "--unknown", "skip", "--json")
    [x] = strict_json_lines(r.stdout)
    assert x["chars"] == 0 and x["skipped"] == 2 and x["bits_per_char"] is None and x["perplexity"] is None
    assert "NaN" not in r.stdout


def test_keys_json():
    rows = strict_json_lines(charlm("keys", "--json").stdout)
    keys = {r["key"]: r for r in rows}
    assert keys["train.patience"]["default"] is None and keys["model.init"]["choices"] == ["xavier", "he", "uniform"]


# ---- bad input: one short line, fast, whatever its size ------------------------------
BIG = "x" * 100_000  # one argument can be at most 128 KiB on Linux


@pytest.mark.parametrize("case", ["huge-set", "huge-config", "billion-laughs", "deep-nesting", "huge-key", "huge-int", "nan-temp"])
def test_huge_or_hostile_input_gets_a_short_line_fast(case, corpus, run_dir, tmp_path):
    cfg = tmp_path / "c.yaml"
    if case == "huge-set":
        args = ["train", corpus, "--set", "model.type=" + BIG]
    elif case == "huge-config":
        cfg.write_text("model:\n  type: " + "y" * 2_000_000 + "\n")
        args = ["train", corpus, "--config", cfg]
    elif case == "billion-laughs":
        levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
        for i in range(1, 10):
            prev = chr(ord("a") + i - 1)
            levels.append(f"{chr(ord('a') + i)}: &{chr(ord('a') + i)} [" + ",".join([f"*{prev}"] * 9) + "]")
        cfg.write_text("\n".join(levels) + "\nmodel:\n  hidden_size: *j\n")
        args = ["train", corpus, "--config", cfg]
    elif case == "deep-nesting":
        cfg.write_text("model: " + "[" * 50_000 + "]" * 50_000 + "\n")
        args = ["train", corpus, "--config", cfg]
    elif case == "huge-key":
        cfg.write_text("model:\n  " + "k" * 100_000 + ": 1\n")
        args = ["train", corpus, "--config", cfg]
    elif case == "huge-int":
        cfg.write_text("model:\n  hidden_size: " + "9" * 5000 + "\n")
        args = ["train", corpus, "--config", cfg]
    else:
        args = ["sample", "-c", run_dir, "--temperature", "nan"]
    t0 = time.perf_counter()
    extra = ["--out", tmp_path / "o"] if args[0] == "train" else ["-n", 5]
    r = charlm(*args, *extra)
    took = time.perf_counter() - t0
    line = one_error_line(r)
    assert len(line) < 300, line
    assert took < 10, took  # the process start is most of it; see the closing note for the timings


# ---- the bundled model, info, export, samples while training ---------------------------
def test_sample_and_score_use_the_bundled_model_and_say_so(tmp_path):
    r = charlm("score", "To be, or not to be", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "model: the bundled tiny-Shakespeare LSTM 2x256 (validation 1.497 nats/char)" in r.stderr
    [x] = strict_json_lines(r.stdout)
    assert x["checkpoint"].endswith("tiny-shakespeare.npz") and x["bits_per_char"] < 3.0
    gibberish = strict_json_lines(charlm("score", "zqxv jjkq xxzq", "--json").stdout)[0]["bits_per_char"]
    assert gibberish > x["bits_per_char"] + 2  # it knows English from noise
    r = charlm("sample", "-n", 200, "--seed", 1, "--prime", "ROMEO:")
    assert r.returncode == 0 and r.stdout.startswith("ROMEO:") and "model: the bundled" in r.stderr


def test_bundled_model_is_small_and_documented():
    from charlm.predict.checkpoint import BUNDLED

    assert BUNDLED.stat().st_size <= 4_000_000
    ck = load_checkpoint(BUNDLED, with_training_state=False)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"{ck.meta['best_val']:.3f} nats/char" in readme and "charlm export" in readme
    assert ck.meta["corpus"]["sha256"] == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def test_info_and_export(run_dir, corpus, tmp_path):
    r = charlm("info", run_dir / "last.npz")
    assert r.returncode == 0, r.stderr
    for want in ["format charlm-checkpoint version 1, resumable", "model: rnn, 1 layer(s) of 24 units",
                 "l0/Wh", "24 x 24", "vocabulary: ", "training: step 30, epoch", "validation best",
                 "corpus: ", "# config default (resolved)"]:
        assert want in r.stdout, want
    [d] = strict_json_lines(charlm("info", run_dir / "last.npz", "--json").stdout)
    assert d["parameters"] == sum(t["count"] for t in d["tensors"].values()) and d["step"] == 30
    [b] = strict_json_lines(charlm("info", run_dir, "--json").stdout)  # a run directory: its best.npz
    assert b["path"] == str(run_dir / "best.npz")
    out = tmp_path / "small.npz"
    r = charlm("export", run_dir / "last.npz", "-o", out)
    assert r.returncode == 0 and out.stat().st_size < (run_dir / "last.npz").stat().st_size / 2
    same = [strict_json_lines(charlm("score", "hero hole", "-c", c, "--json").stdout)[0]["log_prob_nats"]
            for c in (run_dir / "last.npz", out)]
    assert same[0] == same[1]
    [e] = strict_json_lines(charlm("info", out, "--json").stdout)
    assert e["resumable"] is False and e["step"] == 30
    line = one_error_line(charlm("train", corpus, "--resume", out, "-q"))
    assert "no optimizer state" in line


def test_training_prints_and_keeps_a_sample_at_each_evaluation(corpus, tmp_path):
    out = tmp_path / "run"
    r = charlm("train", corpus, "--out", out, *SETS)
    assert r.returncode == 0, r.stderr
    printed = [l for l in r.stderr.splitlines() if l.startswith("sample at step ")]
    rows = [json.loads(l) for l in (out / "samples.jsonl").read_text().splitlines()]
    assert [x["step"] for x in rows] == [10, 20, 30] and len(printed) == 3
    assert all(x["temperature"] == 0.8 and x["seed"] == 1234 and len(x["text"]) <= 100 for x in rows)
    assert printed[0] == "sample at step 10: " + rows[0]["text"].replace("\n", " / ")
    quiet = charlm("train", corpus, "--out", tmp_path / "q", "-q", *SETS)
    assert "sample at step" not in quiet.stderr and (tmp_path / "q" / "samples.jsonl").exists()
    # the same seed and temperature at every evaluation: another run of the same config matches
    again = [json.loads(l) for l in (tmp_path / "q" / "samples.jsonl").read_text().splitlines()]
    assert again == rows


# ---- the n-gram baseline ----------------------------------------------------------------
def test_baseline_command_and_training_prints_it(corpus, tmp_path):
    r = charlm("baseline", corpus)
    assert r.returncode == 0, r.stderr
    [d] = strict_json_lines(charlm("baseline", corpus, "--json").stdout)
    assert f"5-gram Kneser-Ney: {d['kneser_ney_bits_per_char']:.4f} bits/char" in r.stdout
    assert d["kneser_ney_bits_per_char"] < d["unigram_bits_per_char"]
    t = charlm("train", corpus, "--out", tmp_path / "run", *SETS)
    assert f"baseline on the validation split: 5-gram Kneser-Ney {d['kneser_ney_bits_per_char']:.4f} bits/char" in t.stdout
    assert "'0' is not in the range 0<x<=0.99" in one_error_line(charlm("baseline", corpus, "--val-fraction", "0"), 2)


# ---- charlm plot ------------------------------------------------------------------------
def test_plot_writes_a_png_of_every_run(run_dir, corpus, tmp_path):
    other = tmp_path / "other"
    assert charlm("train", corpus, "--out", other, "-q", *SETS, "--set", "train.lr=0.003").returncode == 0
    out = tmp_path / "loss.png"
    r = charlm("plot", run_dir, other, "-o", out)
    assert r.returncode == 0 and f"wrote {out}" in r.stdout, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    assert "no metrics.jsonl" in one_error_line(charlm("plot", tmp_path, "-o", tmp_path / "x.png"))


def test_plot_shows_the_metrics(run_dir):
    from charlm.see.plot import figure, read_run

    run = read_run(run_dir)
    fig = figure([run])
    by_step, by_minute, lr = fig.axes[:3]
    val, train = by_step.lines
    assert list(val.get_xdata()) == [10, 20, 30] and list(val.get_ydata()) == [r["val_loss"] for r in run.records]
    assert val.get_label() == "run validation" and train.get_linestyle() == "--"
    assert list(by_minute.lines[0].get_xdata()) == [r["elapsed_s"] / 60 for r in run.records]
    assert list(lr.lines[0].get_ydata()) == [r["lr"] for r in run.records]
    assert by_step.get_ylabel() == "nats per character"
    assert [a.get_ylabel() for a in by_step.child_axes] == ["bits per character"]


def test_plot_without_matplotlib_says_how_to_install(run_dir, tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None; sys.modules['matplotlib.figure'] = None; "
            "from charlm.cli import main; main()")
    r = subprocess.run([sys.executable, "-c", code, "plot", str(run_dir), "-o", str(tmp_path / "x.png")],
                       capture_output=True, text=True, timeout=60)
    assert "Error: charlm plot needs matplotlib: pip install 'charlm[plot]'" in r.stderr and r.returncode == 1
    assert "Traceback" not in r.stderr


# ---- score --explain / --per-char -------------------------------------------------------
def test_explain_table_and_per_char_json_agree_with_the_score(run_dir):
    r = charlm("score", "hero hole", "-c", run_dir, "--explain")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["char", "bits", "rank", "top", "3", "guesses"] and len(lines) >= 1 + 9 + 2
    assert "\x1b[" not in r.stdout  # not a terminal: no colour
    rows = strict_json_lines(charlm("score", "hero hole", "-c", run_dir, "--per-char", "--json").stdout)
    [total] = strict_json_lines(charlm("score", "hero hole", "-c", run_dir, "--json").stdout)
    assert "".join(x["char"] for x in rows) == "hero hole" and [x["index"] for x in rows] == list(range(9))
    assert sum(x["bits"] for x in rows) == pytest.approx(-total["log_prob_bits"], rel=1e-5)
    for x in rows:
        probs = [t["p"] for t in x["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True)
        assert (x["rank"] == 1) == (x["top"][0]["char"] == x["char"])
    assert "most surprising:" in r.stdout


def test_explain_colours_on_a_terminal_unless_no_color(run_dir, monkeypatch, capsys):
    from charlm.cli.cmd_score import _explained
    from charlm.use.score import explain

    ck = load_checkpoint(run_dir / "best.npz", with_training_state=False)
    chars = explain(ck.build_model(), ck.vocab, "hero hole")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.delenv("NO_COLOR", raising=False)
    _explained(chars, 0, True, False)
    coloured = capsys.readouterr().out
    assert "\x1b[" in coloured and "most surprising:" in coloured
    monkeypatch.setenv("NO_COLOR", "1")
    _explained(chars, 0, True, False)
    assert "\x1b[" not in capsys.readouterr().out


def test_train_minutes_chooses_times_and_stops_at_the_budget(corpus, tmp_path):
    out = tmp_path / "run"
    r = charlm("train", corpus, "--minutes", "0.05", "--out", out, "--set", "data.batch_size=8",
               "--set", "data.seq_length=16", timeout=300)
    assert r.returncode == 0, r.stderr
    assert "timing the candidate models for a 0.05-minute budget" in r.stderr
    assert "chose lstm 1x128 for 0.05 minutes: the largest model that makes at least " in r.stdout
    assert "a 5-gram mixed in" in r.stdout  # 9 KB of text (whether 30 passes fit depends on this machine's pace)
    assert "its schedule ends at step" in r.stdout
    last = load_checkpoint(out / "last.npz")
    assert last.config.train.max_minutes == 0.05 and last.config.data.batch_size == 8  # --set still wins
    assert last.config.train.lr_schedule == "linear" and last.config.train.cooldown == 0.2
    assert any(f"stopped ({why}" in r.stdout for why in ("max_minutes", "max_steps", "early stopping"))
    line = one_error_line(charlm("train", corpus, "--minutes", "1", "--resume", "auto"), 2)
    assert "--minutes chooses a new run's model" in line
