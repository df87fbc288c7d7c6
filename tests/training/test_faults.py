"""Nothing lost: signals, kill -9 at random moments, a full disk, a second trainer."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from charlm.config import load_config
from charlm.errors import TrainingError
from charlm.predict.checkpoint import load_checkpoint
from charlm.training.trainer import Trainer, train
from tests.helpers import ROOT, tiny_overrides

FAULT_SETS = tiny_overrides(**{"model.type": "lstm", "model.hidden_size": 24, "model.dropout": 0.1,
                               "train.max_steps": 400, "train.eval_every": 50, "train.checkpoint_every": 2,
                               "train.lr_schedule": "cosine", "data.batch_size": 8, "data.seq_length": 16})


def charlm_train(corpus, out, *extra):
    args = [sys.executable, "-m", "charlm", "train", str(corpus), "--out", str(out), "-q"]
    args += [x for o in FAULT_SETS for x in ("--set", o)] + list(extra)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)


def final_params(run_dir):
    ck = load_checkpoint(run_dir / "last.npz")
    assert ck.meta["step"] == 400
    return ck.params


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run, in a subprocess exactly like the interrupted ones."""
    d = tmp_path_factory.mktemp("ref")
    corpus = d / "corpus.txt"
    from tests.helpers import random_text

    corpus.write_text(("hero hell hole hello " * 150) + random_text(3000, seed=1), encoding="utf-8")
    p = charlm_train(corpus, d / "run")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err.decode()
    return corpus, d / "run", final_params(d / "run")


def wait_for(path: Path, timeout=60.0):
    t = time.time()
    while not path.exists():
        assert time.time() - t < timeout, f"{path} never appeared"
        time.sleep(0.02)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_writes_last_and_resume_is_exact(reference, tmp_path, sig, code):
    corpus, _, expected = reference
    out = tmp_path / "run"
    p = charlm_train(corpus, out)
    wait_for(out / "last.npz")
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert p.returncode == code, err.decode()
    step = load_checkpoint(out / "last.npz").meta["step"]
    assert 0 < step < 400
    r = charlm_train(corpus, out, "--resume", str(out / "last.npz"))
    _, err = r.communicate(timeout=300)
    assert r.returncode == 0, err.decode()
    for name, a in final_params(out).items():
        np.testing.assert_array_equal(a, expected[name])  # the same float32 values


def test_twenty_kill_nines_lose_nothing(reference, tmp_path):
    """kill -9 at 20 random moments (many land inside a checkpoint write: one every 2 steps),
    resuming after each; the final weights equal the uninterrupted run's bit for bit."""
    corpus, _, expected = reference
    out = tmp_path / "run"
    rng = np.random.default_rng(2024)
    survived = 0
    for _kill in range(20):
        resume = ["--resume", str(out / "last.npz")] if (out / "last.npz").exists() else []
        p = charlm_train(corpus, out, *resume)
        time.sleep(rng.uniform(0.4, 1.6))
        p.kill()
        p.wait()
        for name in ("last.npz", "best.npz"):
            if (out / name).exists():
                load_checkpoint(out / name)  # raises if a kill left it damaged
        survived += 1
    p = charlm_train(corpus, out, "--resume", str(out / "last.npz"))
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err.decode()
    for name, a in final_params(out).items():
        np.testing.assert_array_equal(a, expected[name])
    print(f"{survived}/20 kills survived")
    assert survived == 20


def test_disk_full_keeps_previous_checkpoint(corpus_file, tmp_path, monkeypatch):
    cfg = load_config(None, tiny_overrides(**{"train.max_steps": 30}))
    tr = Trainer(cfg, corpus_file, tmp_path / "run")
    import charlm.predict.checkpoint as ckmod

    real = ckmod.np.savez

    def savez(f, **arrays):
        if tr.state.step >= 20:
            f.write(b"partial bytes")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(f, **arrays)

    monkeypatch.setattr(ckmod.np, "savez", savez)
    with pytest.raises(TrainingError, match=r"cannot write checkpoint .*(best|last).npz at step 20 \(No space left on device\); the previous (best|last).npz, if any, is intact"):
        tr.run()
    ck = load_checkpoint(tmp_path / "run" / "last.npz")
    assert ck.meta["step"] == 10 and load_checkpoint(tmp_path / "run" / "best.npz").meta["step"] == 10
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(ckmod.np, "savez", real)
    resumed = Trainer.resume(tmp_path / "run" / "last.npz", corpus_file, ck.config).run()
    assert resumed.step == 30


def test_unwritable_output_directory(corpus_file, tmp_path, monkeypatch):
    import charlm.training.runlock as runlock

    real = os.open

    def refuse(path, flags, *a, **k):  # creating a file is refused, as a read-only directory does (even for root)
        if flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(path, flags, *a, **k)

    monkeypatch.setattr(runlock.os, "open", refuse)
    cfg = load_config(None, tiny_overrides())
    with pytest.raises(TrainingError, match=r"run: cannot write to the output directory \(Permission denied\)"):
        train(cfg, corpus_file, tmp_path / "run")


def test_unwritable_output_path_is_a_clear_error(corpus_file, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cfg = load_config(None, tiny_overrides())
    with pytest.raises(TrainingError, match=r"cannot create the output directory"):
        train(cfg, corpus_file, blocker / "run")


def test_second_trainer_is_refused_and_stale_lock_is_taken_over(corpus_file, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        from charlm.processes import start_time as _start_time

        (out / ".lock").write_text(f"{sleeper.pid} {_start_time(sleeper.pid)}\n")
        cfg = load_config(None, tiny_overrides(**{"train.max_steps": 5}))
        with pytest.raises(TrainingError, match=rf"another charlm train \(pid {sleeper.pid}\) is using this output directory"):
            train(cfg, corpus_file, out)
    finally:
        sleeper.kill()
        sleeper.wait()
    # the owner is gone (as after kill -9): the lock is stale and the next run takes it over
    res = train(cfg, corpus_file, out)
    assert res.step == 5 and not (out / ".lock").exists()


def test_torn_metrics_line_is_dropped_on_resume(corpus_file, tmp_path):
    cfg = load_config(None, tiny_overrides(**{"train.max_steps": 20}))
    train(cfg, corpus_file, tmp_path / "run")
    metrics = tmp_path / "run" / "metrics.jsonl"
    with open(metrics, "a") as f:
        f.write('{"step": 30, "val_lo')  # a kill in the middle of a write
    (tmp_path / "run" / ".last.npz.abc123.tmp").write_bytes(b"half a checkpoint")
    cfg2 = load_config(None, tiny_overrides(**{"train.max_steps": 30}))
    Trainer.resume(tmp_path / "run" / "last.npz", corpus_file, cfg2).run()
    import json

    assert [json.loads(l)["step"] for l in metrics.read_text().splitlines()] == [10, 20, 30]
    assert not list((tmp_path / "run").glob("*.tmp"))
