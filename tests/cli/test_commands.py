"""What every command shares: the bundled model, info and export, keys, --help defaults, and
bad or hostile input answered in one short line (through the installed script, and in-process)."""

import time

import pytest

from charlm.predict.checkpoint import load_checkpoint
from tests.helpers import ROOT, charlm, one_error_line, run, strict_json_lines


def test_keys_json():
    rows = strict_json_lines(charlm("keys", "--json").stdout)
    keys = {r["key"]: r for r in rows}
    assert keys["train.patience"]["default"] is None and keys["model.init"]["choices"] == ["xavier", "he", "uniform"]


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
    readme = (ROOT / "README.md").read_text()
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


def test_help_shows_defaults():
    for cmd, defaults in [("sample", ["[default: 1000; 0<=x<=1000000]", "[default: 1.0; 0<x<=100]", "[default: (a newline)]"]),
                          ("score", ["[default: error]", "[default: (a newline)]"]),
                          ("train", ["[default: (built-in defaults)]", "0<x<=10080"]),
                          ("baseline", ["[default: 0.1; 0<x<1]", "[default: 5; 1<=x<=8]"])]:
        text = " ".join(run(cmd, "--help").output.split())
        for d in defaults:
            assert d in text, (cmd, d)


def test_bundled_names_the_shipped_model_in_every_command(tmp_path):
    from charlm.predict.checkpoint import BUNDLED

    [d] = strict_json_lines(charlm("info", "bundled", "--json").stdout)
    assert d["path"] == str(BUNDLED)
    r = charlm("export", "bundled", "-o", tmp_path / "m.npz")
    assert r.returncode == 0, r.stderr
    scores = [strict_json_lines(charlm("score", "To be", "-c", c, "--json").stdout)[0]["log_prob_nats"]
              for c in ("bundled", tmp_path / "m.npz")]
    assert scores[0] == scores[1]
