"""``charlm sample`` as a user runs it: batches, best-of, beam search, interactive, novelty,
a closed pipe, Ctrl-C, argument errors."""

import os
import signal
import subprocess

import pytest

from tests.helpers import CHARLM, charlm, run, strict_json_lines


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


def test_ctrl_c_ends_quietly_with_the_shells_status(run_dir):
    """128 + SIGINT, as a stopped training run ends, and nothing on stderr (click alone says
    'Aborted!' and exits 1)."""
    p = subprocess.Popen([CHARLM, "sample", "-c", str(run_dir), "-n", "1000000"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    p.stdout.read(20)  # streaming: the command is inside its loop
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and err == "", (p.returncode, err)


def test_sample_streams_prime_and_is_seeded(trained):
    run_dir, _ = trained
    a = run("sample", "-c", run_dir, "--prime", "hel", "--length", 50, "--seed", 7)
    b = run("sample", "-c", run_dir / "best.npz", "--prime", "hel", "--length", 50, "--seed", 7)
    assert a.exit_code == 0 and a.output == b.output and a.output.startswith("hel") and len(a.output) == 3 + 50 + 1


@pytest.mark.parametrize("args, message", [(["--temperature", "0"], "temperature"), (["--prime", "XQ"], "'X'"),
                                           (["--length", "-3"], "length"), (["--top-k", "0"], "top-k")])
def test_sample_argument_errors(trained, args, message):
    r = run("sample", "-c", trained[0], *args)
    assert r.exit_code in (1, 2) and message in r.output and "Traceback" not in r.output
