"""The CLI end to end with CliRunner: train, sample, score, and one-line errors."""

import json

import pytest
from click.testing import CliRunner

from charlm.cli import main

from .conftest import tiny_overrides


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


@pytest.fixture
def trained(corpus_file, tmp_path):
    sets = [x for o in tiny_overrides() for x in ("--set", o)]
    r = run("train", corpus_file, "--out", tmp_path / "run", *sets)
    assert r.exit_code == 0, r.output
    return tmp_path / "run", r.output


def test_train_prints_config_params_and_summary(trained):
    run_dir, out = trained
    assert "# config default (resolved)" in out and "hidden_size: 16" in out
    assert "parameters: " in out and "l0 " in out and "head " in out
    assert "stopped (max_steps) at step 30" in out
    assert (run_dir / "best.npz").exists() and (run_dir / "last.npz").exists()


def test_resume_extends_a_run(trained, corpus_file):
    run_dir, _ = trained
    r = run("train", corpus_file, "--resume", run_dir / "last.npz", "--set", "train.max_steps=40", "-q")
    assert r.exit_code == 0, r.output
    assert "stopped (max_steps) at step 40" in r.output
    steps = [json.loads(l)["step"] for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [10, 20, 30, 40]


def test_sample_streams_prime_and_is_seeded(trained):
    run_dir, _ = trained
    a = run("sample", "-c", run_dir, "--prime", "hel", "--length", 50, "--seed", 7)
    b = run("sample", "-c", run_dir / "best.npz", "--prime", "hel", "--length", 50, "--seed", 7)
    assert a.exit_code == 0 and a.output == b.output and a.output.startswith("hel") and len(a.output) == 3 + 50 + 1


def test_score_text_json_and_lines(trained, tmp_path):
    run_dir, _ = trained
    r = run("score", "hello hero", "-c", run_dir, "--json")
    d = json.loads(r.output)
    assert set(d) == {"text", "chars", "log_prob_nats", "log_prob_bits", "bits_per_char", "perplexity", "skipped", "checkpoint"}
    assert d["chars"] == 10 and d["log_prob_nats"] < 0
    r = run("score", "-c", run_dir, "--lines", "-", "--json", input="hello\n\nhero hole\n")
    rows = [json.loads(l) for l in r.output.splitlines()]
    assert [x["text"] for x in rows] == ["hello", "hero hole"]
    f = tmp_path / "t.txt"
    f.write_text("hell\nhole", encoding="utf-8")
    r = run("score", "-c", run_dir, "--file", f)
    assert r.exit_code == 0 and "bits/char" in r.output and "9 chars" in r.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "{tmp}/missing.txt"], "missing.txt: no such file"),
        (["train", "{corpus}", "--set", "model.hiden_size=8"], "did you mean 'hidden_size'"),
        (["train", "{corpus}", "--set", "train.lr=-1"], "train.lr is -1.0"),
        (["train", "{corpus}", "--set", "data.batch_size=5000"], "needs at least"),
        (["train", "{corpus}", "--set", "oops"], "expected section.key=value"),
        (["train", "{corpus}", "--set", "model.init=zeros", "-q"], "symmetry"),
        (["sample", "-c", "{tmp}/nope.npz"], "checkpoint not found"),
        (["sample", "-c", "{corpus}"], "not a charlm checkpoint"),
    ],
)
def test_errors_are_one_line_without_traceback(corpus_file, tmp_path, args, message):
    args = [a.format(tmp=tmp_path, corpus=corpus_file) for a in args]
    r = run(*args, "--out", tmp_path / "o") if args[0] == "train" else run(*args)
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    lines = [l for l in r.output.splitlines() if l.startswith("Error:")]
    assert len(lines) == 1 and message in lines[0], r.output


@pytest.mark.parametrize("args, message", [(["--temperature", "0"], "temperature"), (["--prime", "XQ"], "'X'"),
                                           (["--length", "-3"], "length"), (["--top-k", "0"], "top-k")])
def test_sample_argument_errors(trained, args, message):
    r = run("sample", "-c", trained[0], *args)
    assert r.exit_code in (1, 2) and message in r.output and "Traceback" not in r.output


def test_score_unknown_characters(trained):
    r = run("score", "hello Zebra!", "-c", trained[0])
    assert r.exit_code == 1 and "'Z'" in r.output and "'!'" in r.output
    r = run("score", "hello Zebra!", "-c", trained[0], "--unknown", "skip", "--json")
    assert json.loads(r.output)["skipped"] == 2


def test_help_shows_defaults():
    for cmd, defaults in [("sample", ["[default: 1000; 0<=x<=1000000]", "[default: 1.0]", "[default: (a newline)]"]),
                          ("score", ["[default: error]", "[default: (a newline)]"]),
                          ("train", ["[default: (built-in defaults)]"])]:
        text = " ".join(run(cmd, "--help").output.split())
        for d in defaults:
            assert d in text, (cmd, d)
