"""Data-parallel training (parallel.py, launch.py): the shares and collectives in one process,
and real 2-rank jobs through the installed ``charlm`` script and the mpiexec of charlm[mpi]:
the same losses as one process, exact resume, and a killed rank, an interrupted launcher and a
non-finite loss on one rank each ending the job promptly with its last checkpoint whole."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from charlm.config import Config
from charlm.errors import CharlmError, TrainingError
from charlm.network.memory import check_fits, training_memory
from charlm.network.model import Model
from charlm.predict.checkpoint import load_checkpoint
from charlm.text.batches import Batches, eval_streams
from charlm.training import launch
from charlm.training.parallel import Workers
from charlm.use.score import char_nats
from tests.helpers import CHARLM, one_error_line, random_text

# float64, no dropout: one process and two ranks then differ only in the order in which a
# gradient's B columns are added (per rank, then across ranks), a rounding of ~1e-16 per step.
# Measured over these 40 steps: losses 2e-16 apart (relative), weights 1.3e-15 (absolute, of
# weights up to 1.1). 1e-12 leaves a margin of 5,000 for another BLAS's order and still fails
# on any real difference: a wrong share or mean moves the loss by more than 1e-3.
EXACT = ["model.dtype=float64", "model.hidden_size=24", "model.num_layers=2", "data.batch_size=8",
         "data.seq_length=16", "train.max_steps=40", "train.eval_every=10", "train.checkpoint_every=10",
         "train.lr=0.01", "train.sample_length=0"]
SETS = [x for o in EXACT for x in ("--set", o)]


def run(*args, env=None, timeout=120):
    assert CHARLM, "the charlm console script is not installed (pip install -e '.[test,mpi]')"
    full_env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([CHARLM, *map(str, args)], capture_output=True, text=True, env=full_env, timeout=timeout)


def evals(out: Path) -> list[dict]:
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if "val_loss" in r]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    p = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    p.write_text(("hero hell hole hello\n" * 300) + random_text(4000, seed=3), encoding="utf-8")
    return p


# ---- one process: the shares ---------------------------------------------------------------
class Rank(Workers):
    """Rank ``rank`` of ``size`` without MPI: for the shares, which need no communication."""

    def __init__(self, rank, size):
        self.rank, self.size = rank, size


def test_shares_cover_every_stream_once():
    for n, size in [(8, 2), (50, 3), (3, 4), (1, 2)]:
        parts = [Rank(r, size).share(n) for r in range(size)]
        covered = np.concatenate([np.arange(n)[p] for p in parts])
        assert covered.tolist() == list(range(n))
        assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1


def test_a_rank_trains_its_columns_of_every_window():
    ids = np.arange(1000) % 17
    whole = Batches(ids, 8, 10)
    for r in range(2):
        mine = Batches(ids, 8, 10, streams=Rank(r, 2).share(8))
        assert mine.B == 4 and mine.num_windows == whole.num_windows
        for k in (0, 5, whole.num_windows - 1):
            x, y = mine.window(k)
            wx, wy = whole.window(k)
            np.testing.assert_array_equal(x, wx[:, 4 * r : 4 * r + 4])
            np.testing.assert_array_equal(y, wy[:, 4 * r : 4 * r + 4])


def test_the_ranks_evaluation_shares_join_into_the_whole_evaluation():
    cfg = Config.from_dict({"model": {"hidden_size": 12, "dtype": "float64"}})
    model = Model(cfg.model, 9)
    model.init(np.random.default_rng(0))
    ids = np.random.default_rng(1).integers(0, 9, 997)
    whole = char_nats(model, ids, 5, 7)
    for size in (2, 3, 7):  # 5 streams: uneven shares, and ranks with none
        assert eval_streams(len(ids), 5, 7) == 5
        parts = [char_nats(model, ids, 5, 7, Rank(r, size).share(5)) for r in range(size)]
        np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-13)  # BLAS rounds b columns its own way


def test_a_batch_that_does_not_divide_among_the_workers_is_refused():
    with pytest.raises(CharlmError, match="data.batch_size 50 does not divide among 3 workers"):
        Rank(0, 3).check_divides(50)
    Rank(0, 2).check_divides(50)


def test_under_mpiexec_each_rank_gets_one_blas_thread_unless_the_user_chose(monkeypatch):
    from charlm.threads import THREAD_VARIABLES, one_thread_per_rank

    for v in (*THREAD_VARIABLES, "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("PMI_SIZE", "1")
    one_thread_per_rank()
    assert not any(v in os.environ for v in THREAD_VARIABLES)
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    one_thread_per_rank()
    assert [os.environ[v] for v in THREAD_VARIABLES] == ["1", "4", "1"]


def test_the_launcher_gives_every_rank_one_blas_thread_whatever_the_shell_set(monkeypatch):
    seen = {}

    class Started:
        stdout, pid = io.StringIO(""), 0

        def __init__(self, cmd, env, **kw):
            seen.update(cmd=cmd, env=env)

        def wait(self):
            return 0

        def send_signal(self, s):
            pass

    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    monkeypatch.setattr(launch.subprocess, "Popen", Started)
    monkeypatch.setattr(launch, "start_cleaner", lambda *a: None)  # no process for a job that never ran
    assert launch.launch(3, ["train", "x.txt"]) == 0
    assert seen["cmd"][1:3] == ["-n", "3"] and seen["cmd"][-2:] == ["train", "x.txt"]
    assert [seen["env"][v] for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")] == ["1"] * 3


def test_memory_per_worker_counts_its_share_of_the_batch_and_the_ngram_on_rank_0_only():
    cfg = Config.from_dict({"model": {"hidden_size": 64, "ngram_order": 5}, "data": {"batch_size": 32}})
    one = training_memory(cfg, 65, 100_000)
    r0, r1 = (training_memory(cfg, 65, 100_000, workers=4, rank=r) for r in (0, 1))
    act = "activations and buffers"
    assert r0.parts[act] < one.parts[act] / 3
    assert r0.parts["parameters and gradients"] == one.parts["parameters and gradients"]
    assert "n-gram model" in r0.parts and "n-gram model" not in r1.parts
    check_fits(r0, available=4 * r0.total)
    with pytest.raises(TrainingError, match="4 workers, each about"):
        check_fits(r0, available=4 * r0.total - 1, ranks=4)


def test_the_launcher_relays_the_ranks_output_and_reads_mpis_report_of_a_dead_rank(monkeypatch):
    banner = ["", "=" * 83, "=   BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES", "=   PID 26548 RUNNING AT vm",
              "=   EXIT CODE: 9", "=   CLEANING UP REMAINING PROCESSES", "=   YOU CAN IGNORE THE BELOW CLEANUP MESSAGES",
              "=" * 83, "YOUR APPLICATION TERMINATED WITH THE EXIT STRING: Killed (signal 9)",
              "This typically refers to a problem with your application.",
              "Please see the FAQ page for debugging suggestions"]
    ranks = ['{"event": "eval", "step": 10}', "", "stopped (max_steps) at step 30"]
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    died = launch._relay(io.StringIO("\n".join([*ranks, "[mpiexec@vm] Sending Ctrl-C to processes as requested",
                                                *banner]) + "\n"))
    assert died == ("Killed", 9)
    assert out.getvalue() == "\n".join(ranks) + "\n"
    out.truncate(0)
    out.seek(0)
    assert launch._relay(io.StringIO("\n".join(ranks) + "\n")) is None


# ---- real ranks, through the installed script ---------------------------------------------
def test_two_workers_train_what_one_process_trains(corpus, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = run("train", corpus, "--out", one, "-q", *SETS)
    r2 = run("train", corpus, "--out", two, "-q", "--workers", "2", *SETS)
    assert r1.returncode == 0 and r2.returncode == 0, (r1.stderr, r2.stderr)
    a, b = evals(one), evals(two)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [10, 20, 30, 40]
    for x, y in zip(a, b):
        for key in ("train_loss", "val_loss"):
            assert y[key] == pytest.approx(x[key], rel=1e-12, abs=0)
    assert a[-1]["val_loss"] < a[0]["val_loss"] - 0.1  # it learned: the comparison is not of two stuck runs
    p1, p2 = load_checkpoint(one / "last.npz"), load_checkpoint(two / "last.npz")
    for name, w in p1.params.items():
        np.testing.assert_allclose(p2.params[name], w, rtol=0, atol=1e-12)
    # Every rank's streams' hidden state, gathered in order. It has run through 640 recurrent
    # steps, where a product of b columns and one of B round differently: measured up to 6e-13.
    for (h1, c1), (h2, c2) in zip(p1.state, p2.state):
        np.testing.assert_allclose(h2, h1, rtol=0, atol=1e-10)
        np.testing.assert_allclose(c2, c1, rtol=0, atol=1e-10)


def test_in_float32_two_workers_stay_within_float32s_rounding_of_one_process(corpus, tmp_path):
    # The same run in the default float32: measured 1.7e-8 apart (relative) after 40 steps.
    f32 = [x.replace("float64", "float32") for x in SETS]
    r1 = run("train", corpus, "--out", tmp_path / "one", "-q", *f32)
    r2 = run("train", corpus, "--out", tmp_path / "two", "-q", "--workers", "2", *f32)
    assert r1.returncode == 0 and r2.returncode == 0, (r1.stderr, r2.stderr)
    for x, y in zip(evals(tmp_path / "one"), evals(tmp_path / "two")):
        assert y["val_loss"] == pytest.approx(x["val_loss"], rel=1e-5, abs=0)


def test_a_resumed_two_worker_run_is_the_run_that_never_stopped(corpus, tmp_path):
    drop = ["--set", "model.dropout=0.3"]  # each rank's own dropout masks: its RNG must come back exactly
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run("train", corpus, "--out", straight, "-q", "--workers", "2", *SETS, *drop).returncode == 0
    r = run("train", corpus, "--out", split, "-q", "--workers", "2", *SETS, *drop, "--set", "train.max_steps=20")
    assert r.returncode == 0, r.stderr
    ck = load_checkpoint(split / "last.npz")
    assert len(ck.meta["rank_rngs"]) == 1 and ck.meta["rank_rngs"][0] != ck.meta["rng"]
    r = run("train", corpus, "--resume", split, "-q", "--workers", "2", "--set", "train.max_steps=40")
    assert r.returncode == 0, r.stderr
    assert [e["step"] for e in evals(split)] == [e["step"] for e in evals(straight)] == [10, 20, 30, 40]
    for x, y in zip(evals(straight), evals(split)):
        assert (x["train_loss"], x["val_loss"]) == (y["train_loss"], y["val_loss"])
    a, b = load_checkpoint(straight / "last.npz"), load_checkpoint(split / "last.npz")
    for name, w in a.params.items():
        np.testing.assert_array_equal(b.params[name], w)


def test_resuming_with_other_workers_carries_on_where_the_batch_divides(corpus, tmp_path):
    out = tmp_path / "run"
    assert run("train", corpus, "--out", out, "-q", "--workers", "2", *SETS, "--set", "train.max_steps=20").returncode == 0
    r = run("train", corpus, "--resume", out, "-q", "--workers", "3", "--set", "train.max_steps=40")
    line = one_error_line(r, 1)
    assert "data.batch_size 8 does not divide among 3 workers" in line
    r = run("train", corpus, "--resume", out, "-q", "--set", "train.max_steps=40")  # one process
    assert r.returncode == 0, r.stderr
    events = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"step": 20, "event": "workers", "workers": 1, "previous": 2}.items() <= next(
        e for e in events if e.get("event") == "workers").items()
    assert evals(out)[-1]["step"] == 40


def test_the_dry_run_times_the_workers_together_and_gives_memory_per_worker(corpus):
    r = run("train", corpus, "--dry-run", "--workers", "2", *SETS)
    assert r.returncode == 0, r.stderr
    assert "timed, 2 workers" in r.stdout and "for the 2 workers here, each about" in r.stdout
    assert r.stdout.count("# config") == 1  # rank 0 alone prints
    r = run("train", corpus, "--dry-run", "--workers", "2", "--json", *SETS)
    report = json.loads(r.stdout)
    assert report["workers"] == 2 and report["memory_bytes"] == 2 * report["memory_bytes_per_worker"]


def test_minutes_times_the_candidates_with_every_worker(corpus):
    r = run("train", corpus, "--minutes", "0.2", "--dry-run", "--workers", "2", "--json", timeout=300)
    assert r.returncode == 0, r.stderr
    plan, report = (json.loads(l) for l in r.stdout.splitlines()[:2])  # one of each: rank 0 speaks
    assert plan["event"] == "plan" and all(m["seconds_per_step"] > 0 for m in plan["measured"])
    assert report["workers"] == 2 and report["config"]["data"]["batch_size"] % 2 == 0
    assert len(r.stdout.splitlines()) == 2


def test_workers_without_mpi_installed_is_one_line(corpus, tmp_path, monkeypatch):
    import importlib.util

    from click.testing import CliRunner

    from charlm.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mpi4py" else real(name, *a))
    r = CliRunner().invoke(main, ["train", str(corpus), "--out", str(tmp_path / "r"), "--workers", "2"])
    assert r.exit_code == 1 and "pip install 'charlm[mpi]'" in r.output and not (tmp_path / "r").exists()


@pytest.mark.parametrize("given", ["3", "1"])
def test_workers_must_match_the_ranks_mpiexec_started(corpus, tmp_path, given):
    r = subprocess.run([launch.mpi_launcher(), "-n", "2", CHARLM, "train", corpus, "--out", tmp_path / "r", "--workers",
                        given, *SETS], text=True, capture_output=True, timeout=120,
                       env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert r.returncode == 2 and r.stderr.count("Error: ") == 1, r.stderr
    assert f"--workers {given}, but mpiexec started 2 ranks" in r.stderr


def test_mpiexec_runs_the_same_command(corpus, tmp_path):
    mpiexec = launch.mpi_launcher()
    out = tmp_path / "run"
    r = subprocess.run([mpiexec, "-n", "2", CHARLM, "train", corpus, "--out", out, "--json", *SETS], text=True,
                       capture_output=True, timeout=120, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    stopped = [json.loads(l) for l in r.stdout.splitlines() if '"stopped"' in l]
    assert len(stopped) == 1 and stopped[0]["step"] == 40  # one rank speaks


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _rank_pid(launcher: int, rank: int) -> int:
    for pid in _descendants(launcher):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"PMI_RANK={rank}".encode() in env and b"PMI_SIZE=2" in env:
            return pid
    raise AssertionError(f"no rank {rank} under {launcher}")


def _start_long_run(corpus, out):
    cmd = [CHARLM, "train", corpus, "--out", out, "-q", "--workers", "2", *SETS, "--set", "train.max_steps=100000",
           "--set", "train.checkpoint_every=5"]
    proc = subprocess.Popen(list(map(str, cmd)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    deadline = time.monotonic() + 60
    while not (out / "last.npz").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    time.sleep(0.5)
    return proc


def test_a_killed_rank_ends_the_job_promptly_and_the_last_checkpoint_stays_whole(corpus, tmp_path):
    out = tmp_path / "run"
    proc = _start_long_run(corpus, out)
    survivor = _rank_pid(proc.pid, 0)
    os.kill(_rank_pid(proc.pid, 1), signal.SIGKILL)
    t0 = time.monotonic()
    stdout, stderr = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 15
    r = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    # MPI reports the kill; rarely, rank 0 loses its peer mid-collective and aborts first, and
    # MPI's own report of that comes before charlm's line instead
    line = one_error_line(r, 1)
    assert "a worker ended with signal 9 (Killed)" in line or "a worker failed, so the job ended" in line
    assert "BAD TERMINATION" not in stdout + stderr
    ck = load_checkpoint(out / "last.npz")
    assert ck.meta["step"] >= 5
    with pytest.raises(ProcessLookupError):  # mpiexec ended rank 0 too: nothing is left waiting
        os.kill(survivor, 0)


def test_ctrl_c_on_the_launcher_stops_every_rank_after_its_step_and_writes_last(corpus, tmp_path):
    out = tmp_path / "run"
    proc = _start_long_run(corpus, out)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "Error" not in stderr
    last = load_checkpoint(out / "last.npz")
    metrics = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert last.meta["step"] >= metrics[-1]["step"]
    r = run("train", corpus, "--resume", out, "-q", "--workers", "2", "--set", f"train.max_steps={last.meta['step'] + 3}")
    assert r.returncode == 0, r.stderr
    assert load_checkpoint(out / "last.npz").meta["step"] == last.meta["step"] + 3


def test_a_non_finite_loss_on_one_rank_stops_every_rank_with_one_line(corpus, tmp_path):
    # Rank 1's loss becomes NaN at its 7th step (a sitecustomize only this test puts on the path).
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('PMI_RANK') == '1':\n"
        "    import charlm.network.model as m\n"
        "    real, calls = m.Model.loss_and_grad, []\n"
        "    def loss_and_grad(self, *a, **k):\n"
        "        loss, state = real(self, *a, **k)\n"
        "        calls.append(1)\n"
        "        return (float('nan') if len(calls) == 7 else loss), state\n"
        "    m.Model.loss_and_grad = loss_and_grad\n")
    out = tmp_path / "run"
    sets = [*SETS, "--set", "train.checkpoint_every=5"]
    r = run("train", corpus, "--out", out, "-q", "--workers", "2", *sets, env={"PYTHONPATH": str(inject)}, timeout=60)
    assert "step 7: loss is not finite" in one_error_line(r, 1)
    assert "worker 1" not in r.stderr and "BAD TERMINATION" not in r.stdout + r.stderr
    assert load_checkpoint(out / "last.npz").meta["step"] == 5


# ---- however the launcher ends, nothing outlives it and the run resumes ------------------------

def _mpi_segments() -> set[str]:
    """MPI's files: MPICH's shared memory and hydra's topology file, which a rank or an mpiexec
    that dies without finishing leaves."""
    return {str(p) for d, pattern in (("/dev/shm", "mpich*"), ("/tmp", "hydra_hwloc_xmlfile_*"))
            for p in Path(d).glob(pattern)}


def _gone_within(pids: list[int], seconds: float) -> list[int]:
    """Those of ``pids`` still alive after ``seconds`` (zombies count as gone)."""
    deadline = time.monotonic() + seconds
    while True:
        alive = []
        for pid in pids:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                alive.append(pid)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL],
                         ids=["ctrl-c", "sigterm", "sighup", "kill-9"])
def test_however_the_launcher_ends_no_rank_outlives_it_and_the_run_resumes(corpus, tmp_path, sig):
    """SIGHUP is what a closed terminal sends; kill -9 gives the launcher no say at all: the
    ranks notice it is gone, stop after their step, write last.npz and end, and mpiexec with
    them. Each leaves no MPI file behind."""
    shm = _mpi_segments()
    out = tmp_path / "run"
    proc = _start_long_run(corpus, out)
    job = _descendants(proc.pid)
    assert len(job) >= 3  # mpiexec, its proxy, two ranks
    os.kill(proc.pid, sig)
    try:
        proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the launcher did not end") from None
    left = _gone_within(job, 10)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"{len(left)} of the job's processes outlived the launcher"
    assert _mpi_segments() <= shm
    assert not (out / ".lock").exists() or sig == signal.SIGKILL
    step = load_checkpoint(out / "last.npz").meta["step"]
    r = run("train", corpus, "--resume", out, "-q", "--workers", "2", "--set", f"train.max_steps={step + 2}")
    assert r.returncode == 0, r.stderr
    assert load_checkpoint(out / "last.npz").meta["step"] == step + 2


def test_a_killed_rank_leaves_no_mpi_file_behind_run_after_run(corpus, tmp_path):
    shm = _mpi_segments()
    for i in range(2):
        proc = _start_long_run(corpus, tmp_path / f"run{i}")
        os.kill(_rank_pid(proc.pid, 1), signal.SIGKILL)
        proc.communicate(timeout=30)
        assert _mpi_segments() <= shm, _mpi_segments() - shm


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129),
                                       (signal.SIGKILL, None)], ids=["ctrl-c", "sigterm", "sighup", "kill-9"])
@pytest.mark.parametrize("after", [0.3, 0.7, 1.2])
def test_a_launcher_stopped_while_the_ranks_start_ends_them_quietly(corpus, tmp_path, sig, code, after):
    """Before training begins (MPI starting, the corpus loading): no traceback, no claim that a
    worker crashed, no MPI report, nothing left running or behind."""
    shm = _mpi_segments()
    out = tmp_path / "run"
    cmd = [CHARLM, "train", corpus, "--out", out, "-q", "--workers", "2", *SETS, "--set", "train.max_steps=100000"]
    proc = subprocess.Popen(list(map(str, cmd)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    time.sleep(after)
    job = _descendants(proc.pid)
    os.kill(proc.pid, sig)
    stdout, stderr = proc.communicate(timeout=30)
    left = _gone_within(job + _descendants(proc.pid), 10)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"{len(left)} of the job's processes outlived the launcher"
    if code is not None:  # 128 + the signal, or death by it before the launcher had a handler
        assert proc.returncode in (code, -sig), (proc.returncode, stderr)
        for bad in ("Traceback", "Segmentation", "Abort(", "Error"):
            assert bad not in stderr, stderr
    deadline = time.monotonic() + 15  # after kill -9, the launcher's cleaner deletes them once mpiexec is gone
    while _mpi_segments() - shm and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _mpi_segments() - shm, _mpi_segments() - shm


def test_what_a_job_leaves_is_deleted_when_its_launcher_was_killed(tmp_path):
    """A launcher killed with -9 cannot clean up after mpiexec; the cleaner it starts beside
    mpiexec does, once both are gone: the files of LEFTOVERS new since the job began that no
    process holds, and nothing else."""
    import tempfile

    from charlm.processes import identity

    def leftover():
        fd, name = tempfile.mkstemp(prefix="hydra_hwloc_xmlfile_", dir="/tmp")
        return fd, Path(name)

    fd, old = leftover()  # there before the job: not the job's
    os.close(fd)
    before = launch._leftovers()
    launcher, mpiexec = (subprocess.Popen(["sleep", "60"]) for _ in range(2))
    cleaner = launch.start_cleaner(mpiexec.pid, before, identity(launcher.pid))
    fd, new = leftover()  # what the job leaves
    os.close(fd)
    held, kept = leftover()  # new, but a process still has it open
    try:
        mpiexec.kill()
        mpiexec.wait()
        time.sleep(1.0)
        assert new.exists()  # the launcher is alive: cleaning up is its job
        launcher.kill()
        launcher.wait()
        cleaner.wait(timeout=15)
        assert not new.exists() and old.exists() and kept.exists()
    finally:
        os.close(held)
        for f in (old, new, kept):
            f.unlink(missing_ok=True)


def test_mpiexec_killed_is_one_line_and_leaves_nothing(corpus, tmp_path):
    shm = _mpi_segments()
    proc = _start_long_run(corpus, tmp_path / "run")
    mpiexec = next(p for p in _descendants(proc.pid) if "mpiexec" in Path(f"/proc/{p}/cmdline").read_text())
    job = _descendants(proc.pid)
    os.kill(mpiexec, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=30)
    r = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert "mpiexec ended with signal 9" in one_error_line(r, 1)
    assert not _gone_within(job, 10)
    assert _mpi_segments() <= shm, _mpi_segments() - shm
