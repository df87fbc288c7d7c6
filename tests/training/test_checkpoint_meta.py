"""A checkpoint's metadata is validated as rigorously as its arrays: every field a loader reads,
in every command that loads a checkpoint (info, sample, score, train --from and --resume,
export), is checked once, where the file is read, and a bad one is the loader's one-line
error naming the field; never a traceback, NaN or a crash further on."""

import io
import json
import math
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charlm.cli import main
from charlm.predict.checkpoint import load_checkpoint
from tests.helpers import random_text, tiny_overrides

SETS = [x for o in tiny_overrides(**{"train.max_steps": 4, "train.eval_every": 2, "model.ngram_order": 3,
                                      "model.hidden_size": 8}) for x in ("--set", o)]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A mixed run (its mix_weight fitted) and a fine-tuned one (a lineage), as charlm writes them."""
    d = tmp_path_factory.mktemp("meta")
    corpus = d / "corpus.txt"
    corpus.write_text(("hero hell hole hello\n" * 100) + random_text(2000, seed=3), encoding="utf-8")
    r = CliRunner().invoke(main, ["train", str(corpus), "--out", str(d / "run"), "-q", *SETS])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["train", str(corpus), "--from", str(d / "run" / "last.npz"), "--out",
                                  str(d / "ft"), "-q", "--set", "train.max_steps=2"])
    assert r.exit_code == 0, r.output
    meta = load_checkpoint(d / "ft" / "last.npz").meta
    assert isinstance(meta["mix_weight"], float) and isinstance(meta["lineage"], dict)
    return d, corpus


def rewrite_meta(src, dst, change):
    """Copy checkpoint ``src`` to ``dst`` with ``change(meta)`` applied to its metadata."""
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    meta = json.loads(np.load(io.BytesIO(members["meta_json.npy"])).tobytes())
    change(meta)
    buf = io.BytesIO()
    np.save(buf, np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8))
    members["meta_json.npy"] = buf.getvalue()
    with zipfile.ZipFile(dst, "w") as z:
        for n, raw in members.items():
            z.writestr(n, raw)
    return dst


def setter(path, value):
    """A change that sets meta[path[0]][path[1]]... to ``value`` (deleting it when value is DELETE)."""
    def change(meta):
        at = meta
        for k in path[:-1]:
            at = at[k]
        if value is DELETE:
            del at[path[-1]]
        else:
            at[path[-1]] = value
    return change


DELETE = object()


def commands(ck, corpus, tmp):
    return {
        "info": ["info", ck],
        "info --json": ["info", ck, "--json"],
        "sample": ["sample", "-c", ck, "-n", "20", "--seed", "1"],
        "score --json": ["score", "hello", "-c", ck, "--json"],
        "score --explain": ["score", "hello", "-c", ck, "--explain"],
        "train --from": ["train", corpus, "--from", ck, "--out", f"{tmp}/from", "-q", "--set", "train.max_steps=1"],
        "train --resume": ["train", corpus, "--resume", ck, "--out", f"{tmp}/resume", "-q",
                           "--set", "train.max_steps=6"],
        "export": ["export", ck, "-o", f"{tmp}/exported.npz"],
    }


def run_all(ck, corpus, tmp):
    """Each command's (exit code, last line); a traceback fails the test at once."""
    out = {}
    for name, args in commands(str(ck), str(corpus), str(tmp)).items():
        r = CliRunner().invoke(main, args)
        if r.exception is not None and not isinstance(r.exception, SystemExit):
            raise AssertionError(f"{name}: {type(r.exception).__name__}: {r.exception}") from r.exception
        lines = [l for l in r.output.splitlines() if l.strip()]
        out[name] = (r.exit_code, lines[-1] if lines else "")
        if r.exit_code:
            assert lines[-1].startswith("Error: ") and sum(l.startswith("Error: ") for l in lines) == 1, r.output
            assert "nan" not in lines[-1].lower().split() and len(lines[-1]) < 450
        else:
            assert not any(w in r.output for w in (" nan", " inf", "NaN", "Infinity")), (name, r.output)
    return out


# Fields every command reads (the model's, its mixture's, what info shows): a bad value is an
# error wherever the checkpoint is loaded.
EVERYWHERE = [
    (("mix_weight",), 1.5), (("mix_weight",), -0.1), (("mix_weight",), math.nan), (("mix_weight",), "0.5"),
    (("mix_weight",), True), (("mix_weight",), math.inf),
    (("ngram_chars",), -5), (("ngram_chars",), "many"), (("ngram_chars",), 10**30), (("ngram_chars",), True),
    (("step",), -1), (("step",), 2.5), (("step",), "7"), (("step",), None), (("step",), 10**40),
    (("epoch",), -3), (("elapsed_s",), -1.0), (("elapsed_s",), math.nan), (("elapsed_s",), "long"),
    (("best_val",), math.nan), (("best_val",), -math.inf), (("best_val",), "low"), (("best_val",), [1]),
    (("last_val",), {}), (("train_chars",), -1), (("train_chars",), 1.5),
    (("corpus",), "data.txt"), (("corpus",), [1, 2]), (("corpus", "chars"), "many"), (("corpus", "sha256"), 5),
    (("corpus", "path"), None), (("corpus", "paths"), "a.txt"), (("corpus", "files"), -2),
    (("lineage",), "bundled"), (("lineage",), [1]), (("lineage", "added_chars"), 5),
    (("lineage", "step"), "x"), (("lineage", "source"), None), (("lineage", "sha256"), 12),
    (("lineage", "parent"), "nobody"), (("lineage", "corpus"), 3), (("lineage", "best_val"), math.nan),
    (("config_name",), 5), (("config_name",), "x" * 500),
]
# Training progress: read with the training state (resume, and info, which shows it); sampling,
# scoring, exporting and fine-tuning from the model do not read it and work.
RESUME_ONLY = [
    (("optimizer_t",), -1), (("optimizer_t",), "3"), (("batch",), -1), (("batch",), 1.5),
    (("loss_sum",), math.nan), (("loss_sum",), "x"), (("loss_count",), -1), (("plateau_ref",), "x"),
    (("stale_evals",), -2), (("lr",), -1.0), (("lr",), math.inf), (("rng",), "seed"), (("rng",), {"state": 1}),
    (("rank_rngs",), "x"), (("rank_rngs",), [1, 2]),
]


@pytest.mark.parametrize("path, value", EVERYWHERE, ids=[f"{'.'.join(p)}={str(v)[:12]}" for p, v in EVERYWHERE])
def test_a_bad_field_every_loader_reads_is_the_loaders_one_line_error_everywhere(made, tmp_path, path, value):
    d, corpus = made
    ck = rewrite_meta(d / "ft" / "last.npz", tmp_path / "bad.npz", setter(path, value))
    for name, (code, line) in run_all(ck, corpus, tmp_path).items():
        assert code == 1, (name, line)
        assert "invalid checkpoint metadata" in line and path[0] in line, (name, line)


@pytest.mark.parametrize("path, value", RESUME_ONLY, ids=[f"{'.'.join(p)}={str(v)[:12]}" for p, v in RESUME_ONLY])
def test_a_bad_training_progress_field_stops_what_reads_the_training_state(made, tmp_path, path, value):
    d, corpus = made
    ck = rewrite_meta(d / "ft" / "last.npz", tmp_path / "bad.npz", setter(path, value))
    results = run_all(ck, corpus, tmp_path)
    for name in ("train --resume", "info", "info --json"):
        code, line = results.pop(name)
        assert code == 1 and path[0] in line, (name, line)
    assert all(code == 0 for code, _ in results.values()), results


def test_missing_training_progress_stops_only_resume(made, tmp_path):
    d, corpus = made
    ck = rewrite_meta(d / "ft" / "last.npz", tmp_path / "bad.npz", setter(("optimizer_t",), DELETE))
    results = run_all(ck, corpus, tmp_path)
    code, line = results.pop("train --resume")
    assert code == 1 and "cannot be resumed" in line
    assert all(code == 0 for code, _ in results.values()), results


def test_a_deep_lineage_is_refused_not_a_recursion(made, tmp_path):
    d, corpus = made

    def deep(meta):
        lin = meta["lineage"]
        for _ in range(300):
            lin = {**meta["lineage"], "parent": lin}
        meta["lineage"] = lin

    ck = rewrite_meta(d / "ft" / "last.npz", tmp_path / "bad.npz", deep)
    for name, (code, line) in run_all(ck, corpus, tmp_path).items():
        assert code == 1 and "lineage" in line, (name, line)


def test_metadata_nested_deeper_than_a_parser_goes(made, tmp_path):
    """JSON nested 100,000 deep: the parser's recursion error is the loader's one line."""
    d, corpus = made
    ck = rewrite_meta(d / "ft" / "last.npz", tmp_path / "bad.npz", setter(("lineage",), "PLACEHOLDER"))
    with zipfile.ZipFile(ck) as z:
        members = {n: z.read(n) for n in z.namelist()}
    raw = np.load(io.BytesIO(members["meta_json.npy"])).tobytes()
    raw = raw.replace(b'"PLACEHOLDER"', b"[" * 100_000 + b"]" * 100_000)
    buf = io.BytesIO()
    np.save(buf, np.frombuffer(raw, np.uint8))
    members["meta_json.npy"] = buf.getvalue()
    with zipfile.ZipFile(ck, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    for name, (code, line) in run_all(ck, corpus, tmp_path).items():
        assert code == 1 and "invalid checkpoint metadata" in line, (name, line)


def test_the_metadata_charlm_writes_passes(made, tmp_path):
    d, corpus = made
    for ck in (d / "run" / "last.npz", d / "run" / "best.npz", d / "ft" / "last.npz"):
        results = run_all(ck, corpus, tmp_path / ck.parent.name / ck.stem)
        assert all(code == 0 for code, _ in results.values()), results


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
                    max_leaves=6)
FIELDS = ["step", "epoch", "batch", "elapsed_s", "best_val", "last_val", "loss_sum", "loss_count", "plateau_ref",
          "stale_evals", "lr", "mix_weight", "lineage", "rank_rngs", "rng", "train_chars", "corpus", "optimizer_t",
          "ngram_chars", "config_name"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(st.sampled_from(FIELDS), JSON, min_size=1, max_size=3))
def test_fuzzed_metadata_never_crashes_a_command(made, tmp_path_factory, changes):
    d, corpus = made
    tmp = tmp_path_factory.mktemp("fuzz")
    ck = rewrite_meta(d / "ft" / "last.npz", tmp / "fuzzed.npz", lambda meta: meta.update(changes))
    run_all(ck, corpus, tmp)


def test_a_vocabulary_of_lone_surrogates_is_refused_where_it_is_read(made, tmp_path):
    """Valid JSON, never what UTF-8 text decodes to: it would fail later in every printed sample."""
    d, corpus = made
    ck = rewrite_meta(d / "ft" / "last.npz", tmp_path / "bad.npz", lambda m: m["vocab"].__setitem__(0, "\ud800"))
    for name, (code, line) in run_all(ck, corpus, tmp_path).items():
        assert code == 1 and "surrogates" in line, (name, line)


# ---- keys charlm removed: old configs and checkpoints still load -------------------------------

def with_removed_keys(meta, value_of=lambda key, old: old):
    """The metadata as charlm wrote it before config.REMOVED's keys went: every one of them in
    the checkpoint's config, at ``value_of(key, its old default)``."""
    from charlm.config import REMOVED

    for key, (old, _) in REMOVED.items():
        section, name = key.split(".")
        meta["config"][section][name] = value_of(key, old)


def test_a_checkpoint_written_before_a_key_was_removed_still_loads_samples_scores_and_resumes(made, tmp_path):
    d, corpus = made
    for src in (d / "ft" / "last.npz", d / "run" / "last.npz"):
        ck = rewrite_meta(src, tmp_path / f"old-{src.parent.name}.npz", with_removed_keys)
        results = run_all(ck, corpus, tmp_path / src.parent.name)
        assert all(code == 0 for code, _ in results.values()), results


def test_a_removed_key_at_another_value_is_one_line_naming_it(made, tmp_path):
    from click.testing import CliRunner

    from charlm.config import REMOVED

    d, corpus = made
    for key, (old, _) in REMOVED.items():
        other = (not old) if isinstance(old, bool) else (old + 1 if old == 0 else old * 2)
        ck = rewrite_meta(d / "ft" / "last.npz", tmp_path / "new.npz",
                          lambda m: with_removed_keys(m, lambda k, o: other if k == key else o))
        for name, (code, line) in run_all(ck, corpus, tmp_path).items():
            assert code == 1 and key in line and "was removed" in line, (name, line)
        r = CliRunner().invoke(main, ["train", str(corpus), "--set", f"{key}={other}", "--dry-run"])
        assert r.exit_code == 1 and key in r.output and "was removed" in r.output
        r = CliRunner().invoke(main, ["train", str(corpus), "--set", f"{key}={old}", "--dry-run",
                                      "--out", str(tmp_path / "dry")])
        assert r.exit_code == 0, r.output
