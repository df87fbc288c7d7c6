"""Every kind of bad input, through the CLI: one clear line naming what and where, a non-zero
exit, no traceback, and no partial file left behind."""

import json
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from charlm.cli import main
from tests.helpers import random_text, tiny_overrides

SETS = [x for o in tiny_overrides() for x in ("--set", o)]


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


@pytest.fixture
def run_dir(corpus_file, tmp_path):
    r = run("train", corpus_file, "--out", tmp_path / "run", "-q", *SETS)
    assert r.exit_code == 0, r.output
    return tmp_path / "run"


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10" + bytes(range(256))

CORPUS_CASES = {
    "missing": (lambda d: d / "nope.txt", "nope.txt: no such file or directory"),
    "empty-dir": (lambda d: (d / "texts").mkdir() or d / "texts", "texts: no UTF-8 text files to read"),
    "dir-of-binaries": (lambda d: write(d / "imgs" / "a.png", PNG).parent,
                        "imgs: no UTF-8 text files to read; skipped 1 (binary 1: a.png)"),
    "empty-file": (lambda d: write(d / "e.txt", b""), "e.txt: file is empty"),
    "nul-bytes": (lambda d: write(d / "b.txt", b"hello\x00world" * 100), "b.txt: looks like a binary file (NUL byte at offset 5)"),
    "image": (lambda d: write(d / "img.txt", PNG), "img.txt: looks like a binary file (NUL byte at offset 8)"),
    "image-no-nul": (lambda d: write(d / "jpg.txt", b"\xff\xd8\xff\xe0JFIF" + bytes(range(1, 256))), "jpg.txt: not UTF-8 text: byte 0xFF at offset 0"),
    "latin-1": (lambda d: write(d / "l.txt", ("ab " * 500 + "café").encode("latin-1")), "l.txt: not UTF-8 text: byte 0xE9 at offset 1503"),
    "too-short": (lambda d: write(d / "s.txt", "hello world " * 3), "needs at least 36"),
    "one-character": (lambda d: write(d / "a.txt", "a" * 5000), "a.txt: the corpus has a single distinct character ('a')"),
}


@pytest.mark.parametrize("case", CORPUS_CASES)
def test_bad_corpus(tmp_path, case):
    make, message = CORPUS_CASES[case]
    out = tmp_path / "out"
    r = run("train", make(tmp_path), "--out", out, "-q", *SETS)
    assert_clean_error(r, message)
    assert not out.exists() or not list(out.glob("*.npz"))


def assert_clean_error(r, message):
    assert r.exit_code != 0, r.output
    assert "Traceback" not in r.output, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    errors = [l for l in r.output.splitlines() if l.startswith("Error:")]
    assert len(errors) == 1, r.output
    assert message in errors[0], errors[0]


CONFIG_CASES = {
    "yaml-syntax": ("model:\n  type: lstm\n  hidden_size: [16\n", [], "YAML error at line 4"),
    "unknown-key": ("model:\n  hiden_size: 16\n", [], "unknown key model.hiden_size (did you mean 'hidden_size'?)"),
    "unknown-section": ("trian:\n  lr: 1\n", [], "unknown section 'trian' (did you mean 'train'?)"),
    "wrong-type": ("model:\n  hidden_size: many\n", [], "model.hidden_size must be an integer, got 'many'"),
    "zero-lr": ("train:\n  lr: 0\n", [], "train.lr is 0.0; it must be > 0.0"),
    "negative-lr": ("", ["train.lr=-0.1"], "train.lr is -0.1; it must be > 0.0"),
    "hidden-0": ("", ["model.hidden_size=0"], "model.hidden_size is 0; it must be >= 1"),
    "dropout-1": ("", ["model.dropout=1.0"], "model.dropout is 1.0; it must be >= 0.0 and < 1.0"),
    "dropout-neg": ("", ["model.dropout=-0.1"], "model.dropout is -0.1"),
    "two-dropouts": ("", ["model.dropout=0.2", "model.variational_dropout=0.3"],
                     "model.variational_dropout replaces model.dropout's per-step masks; set one of them, not both"),
    "zoneout-removed": ("", ["model.zoneout_hidden=0.1"], "model.zoneout_hidden was removed from charlm"),
    "seq-0": ("", ["data.seq_length=0"], "data.seq_length is 0; it must be >= 1"),
    "batch-too-big": ("", ["data.batch_size=4000"], "batch_size 4000 x (seq_length 8 + 1) needs at least 36000"),
    "model-type": ("", ["model.type=transformer"], "model.type is 'transformer'; allowed: rnn, lstm, gru"),
    "optimizer": ("", ["train.optimizer=adamw"], "train.optimizer is 'adamw' (did you mean 'adam'?); allowed"),
    "set-no-equals": ("", ["train.lr"], "override 'train.lr': expected section.key=value"),
    "set-no-section": ("", ["lr=0.1"], "override 'lr=0.1': expected section.key=value"),
    "set-bad-value": ("", ["model.hidden_size={"], "override 'model.hidden_size={': cannot parse the value"),
    "python-tag": ("model: !!python/object/apply:os.system ['echo hacked']\n", [], "YAML error"),
    "not-a-mapping": ("- just\n- a list\n", [], "expected a mapping with sections model, data, train"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_bad_config(corpus_file, tmp_path, case):
    text, sets, message = CONFIG_CASES[case]
    cfg = write(tmp_path / "c.yaml", text or "{}\n")
    out = tmp_path / "out"
    args = [x for o in sets for x in ("--set", o)]
    # the tiny-run overrides, less any key the case itself sets (--set would win over the file)
    base = [x for o in tiny_overrides() if o.split("=")[0].split(".")[1] not in text for x in ("--set", o)]
    r = run("train", corpus_file, "--config", cfg, "--out", out, "-q", *base, *args)
    assert_clean_error(r, message)
    assert not out.exists()


def _pickle_npz(path, marker):
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    np.savez(path, meta_json=np.array([Evil()], dtype=object), allow_pickle=True)


def _newer(run_dir, path):
    with zipfile.ZipFile(run_dir / "last.npz") as z:
        entries = {n: z.read(n) for n in z.namelist()}
    import io

    meta = json.loads(np.lib.format.read_array(io.BytesIO(entries["meta_json.npy"])).tobytes())
    meta["version"] = 7
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.frombuffer(json.dumps(meta).encode(), np.uint8))
    entries["meta_json.npy"] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as z:
        for n, data in entries.items():
            z.writestr(n, data)
    return path


CHECKPOINT_CASES = {
    "missing": (lambda d, r: d / "gone.npz", "gone.npz: checkpoint not found"),
    "truncated": (lambda d, r: write(d / "t.npz", (r / "last.npz").read_bytes()[:700]), "t.npz: not a charlm checkpoint"),
    "random-bytes": (lambda d, r: write(d / "r.npz", np.random.default_rng(0).bytes(4096)), "r.npz: not a charlm checkpoint"),
    "other-zip": (lambda d, r: np.savez(d / "o.npz", w=np.ones(3)) or d / "o.npz", "o.npz: not a charlm checkpoint (no meta_json entry)"),
    "newer-version": (lambda d, r: _newer(r, d / "n.npz"), "n.npz: checkpoint format version 7 is newer than this charlm reads"),
    "pickle": (lambda d, r: _pickle_npz(d / "p.npz", d / "PWNED") or d / "p.npz", "p.npz: not a charlm checkpoint (meta_json is not UTF-8 JSON bytes)"),
}


@pytest.mark.parametrize("case", CHECKPOINT_CASES)
@pytest.mark.parametrize("command", ["sample", "score", "resume"])
def test_bad_checkpoint(run_dir, corpus_file, tmp_path, case, command):
    make, message = CHECKPOINT_CASES[case]
    path = make(tmp_path, run_dir)
    if command == "sample":
        r = run("sample", "-c", path, "-n", 5)
    elif command == "score":
        r = run("score", "hello", "-c", path)
    else:
        r = run("train", corpus_file, "--resume", path, "-q", "--out", tmp_path / "resumed")
    assert_clean_error(r, message)
    assert not (tmp_path / "PWNED").exists()


def test_resume_with_other_vocabulary(run_dir, tmp_path):
    other = write(tmp_path / "other.txt", random_text(4000, alphabet="xyz \n"))
    r = run("train", other, "--resume", run_dir / "last.npz", "-q")
    assert_clean_error(r, "other.txt: has characters outside the checkpoint's vocabulary")


@pytest.mark.parametrize(
    "args, message",
    [
        (["sample", "--prime", "hello ZQ"], "prime text has 2 character(s) not in the model's vocabulary: 'Z' (U+005A), 'Q' (U+0051)"),
        (["sample", "--temperature", "0"], "'0' is not in the range 0<x<=100"),
        (["sample", "--temperature", "-1"], "'-1' is not in the range 0<x<=100"),
        (["sample", "--temperature", "nan"], "'nan' is not in the range 0<x<=100"),
        (["sample", "--temperature", "inf"], "'inf' is not in the range 0<x<=100"),
        (["sample", "--top-p", "0"], "'0' is not in the range 0<x<=1"),
        (["sample", "--top-p", "1.5"], "'1.5' is not in the range 0<x<=1"),
        (["sample", "--length", "-5"], "-5 is not in the range 0<=x<=1000000"),
        (["sample", "--length", "99999999"], "99999999 is not in the range 0<=x<=1000000"),
        (["sample", "--num-samples", "0"], "0 is not in the range 1<=x<=10000"),
        (["sample", "--beam", "3", "--top-k", "2"], "--beam searches, it does not sample: leave out --top-k"),
        (["sample", "--beam", "3", "--seed", "2"], "--beam searches, it does not sample: leave out --seed"),
        (["sample", "--top-k", "0"], "0 is not in the range x>=1"),
        (["sample", "--seed", "-1"], "-1 is not in the range"),
        (["sample", "--prime", ""], "the prime text must have at least one character"),
        (["score", "hello Ω"], "text has character(s) not in the model's vocabulary: 'Ω' (U+03A9)"),
        (["score", "hello", "--context", "Ω"], "context has 1 character(s) not in the model's vocabulary: 'Ω'"),
        (["score", ""], "text 1 is empty"),
        (["score", "--lines", "-"], "no text to score"),
        (["score"], "give exactly one of TEXT, --file or --lines"),
    ],
)
def test_bad_sample_and_score_arguments(run_dir, args, message):
    r = run(*args, "-c", run_dir, input="\n\n")
    assert_clean_error(r, message)


def test_large_and_unusual_vocabularies(tmp_path):
    """Korean (thousands of distinct characters, 2-byte ids), emoji and CRLF line endings."""
    rng = np.random.default_rng(0)
    hangul = [chr(0xAC00 + i) for i in rng.choice(11172, 2500, replace=False)]
    words = ["".join(rng.choice(hangul, 3)) for _ in range(600)]
    text = "".join(hangul) + "\r\n" + "\r\n".join(" ".join(rng.choice(words, 6)) + " 😀🎉" for _ in range(900)) + "\r\n"
    corpus = write(tmp_path / "ko.txt", text.encode("utf-8"))
    out = tmp_path / "ko"
    sets = [x for o in tiny_overrides(**{"train.max_steps": 6, "train.eval_every": 3, "train.checkpoint_every": 3})
            for x in ("--set", o)]
    r = run("train", corpus, "--out", out, "-q", *sets)
    assert r.exit_code == 0, r.output
    from charlm.predict.checkpoint import load_checkpoint

    ck = load_checkpoint(out / "best.npz")
    assert len(ck.vocab) > 2000 and "\r" in ck.vocab.chars and "😀" in ck.vocab.chars
    r = run("sample", "-c", out, "-n", 40, "--seed", 1, "--prime", words[0])
    assert r.exit_code == 0 and set(r.output) <= set(ck.vocab.chars)
    r = run("score", words[1] + " 😀\r\n", "-c", out, "--json")
    assert r.exit_code == 0 and json.loads(r.output)["chars"] == 7
