"""``charlm score`` and ``charlm baseline`` as a user runs them: lines, several models,
explained characters, unknown characters."""

import json
import sys

import pytest

from charlm.predict.checkpoint import load_checkpoint
from tests.helpers import SETS, charlm, one_error_line, run, strict_json_lines


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


def test_explain_and_per_char_leave_out_unknown_characters_with_skip(run_dir):
    """``--unknown skip`` means what it means for the score: the characters the model lacks are
    left out and counted, and the rest is explained as the score scores it."""
    r = charlm("score", "heΩro hoΩle", "-c", run_dir, "--per-char")
    assert r.returncode == 1 and "--unknown skip leaves them out" in one_error_line(r)
    rows = strict_json_lines(charlm("score", "heΩro hoΩle", "-c", run_dir, "--unknown", "skip", "--per-char",
                                    "--json").stdout)
    [total] = strict_json_lines(charlm("score", "heΩro hoΩle", "-c", run_dir, "--unknown", "skip", "--json").stdout)
    assert "".join(x["char"] for x in rows) == "hero hole" and total["skipped"] == 2
    assert sum(x["bits"] for x in rows) == pytest.approx(-total["log_prob_bits"], rel=1e-5)
    r = charlm("score", "heΩro hoΩle", "-c", run_dir, "--unknown", "skip", "--explain")
    assert r.returncode == 0 and "over 9 characters, 2 skipped" in r.stdout, r.stderr
    r = charlm("score", "ΩΩ", "-c", run_dir, "--unknown", "skip", "--per-char")
    assert "text has nothing left to explain" in one_error_line(r)


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


# ---- the n-gram baseline ----------------------------------------------------------------
def test_baseline_command_and_training_prints_it(corpus, tmp_path):
    r = charlm("baseline", corpus)
    assert r.returncode == 0, r.stderr
    [d] = strict_json_lines(charlm("baseline", corpus, "--json").stdout)
    assert f"5-gram Kneser-Ney: {d['kneser_ney_bits_per_char']:.4f} bits/char" in r.stdout
    assert d["kneser_ney_bits_per_char"] < d["unigram_bits_per_char"]
    t = charlm("train", corpus, "--out", tmp_path / "run", *SETS)
    assert f"baseline on the validation split: 5-gram Kneser-Ney {d['kneser_ney_bits_per_char']:.4f} bits/char" in t.stdout
    assert "'0' is not in the range 0<x<1" in one_error_line(charlm("baseline", corpus, "--val-fraction", "0"), 2)


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


def test_score_unknown_characters(trained):
    r = run("score", "hello Zebra!", "-c", trained[0])
    assert r.exit_code == 1 and "'Z'" in r.output and "'!'" in r.output
    r = run("score", "hello Zebra!", "-c", trained[0], "--unknown", "skip", "--json")
    assert json.loads(r.output)["skipped"] == 2
