"""``charlm train`` as a user runs it (the installed script, and in-process with
CliRunner): a run never lost or overwritten, resume, early stopping, the dry run, JSON lines."""

import json
import shutil
import time

from charlm.predict.checkpoint import load_checkpoint
from tests.helpers import SETS, charlm, one_error_line, run, strict_json_lines


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
                 "dry run: nothing trained, no run written"]:
        assert want in r.stdout, want
    assert list(tmp_path.iterdir()) == [odd]  # no runs/ directory
    [d] = strict_json_lines(charlm("train", odd, "--dry-run", "--json", *SETS, cwd=tmp_path).stdout)
    assert d["steps_per_epoch"] > 0 and d["memory_bytes"] > 0 and d["seconds_per_epoch"] > 0
    flagged = {c["code_point"]: c["flags"] for c in d["vocabulary"] if c["flags"]}
    assert flagged["U+FEFF"][0] == "byte-order mark" and "U+000D" in flagged and "U+200B" in flagged
    # what the command describes, a notebook gets from the library (all but the timing and the free memory)
    from charlm import describe_run, plan
    from charlm.text.sources import CorpusSource

    sets = [v for k, v in zip(SETS[::2], SETS[1::2]) if k == "--set"]
    mine = describe_run(plan(CorpusSource((str(odd),)), None, sets, out_dir=tmp_path / "runs" / "new").trainer)
    varies = ("seconds_per_step", "seconds_per_epoch", "memory_available_bytes", "output_dir")
    assert {k: v for k, v in mine.items() if k not in varies} == {k: v for k, v in d.items() if k not in varies}
    assert list(tmp_path.iterdir()) == [odd]


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
