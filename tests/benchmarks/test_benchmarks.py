"""Smoke tests so the benchmarks cannot rot: one tiny row, both backends where torch is installed."""

import json
import subprocess

import pytest

from tests.helpers import HAVE_TORCH, ROOT, needs_torch


@pytest.mark.torch  # both sides where PyTorch is installed
def test_throughput_tiny_row(shakespeare, monkeypatch, capsys):
    monkeypatch.setenv("CHARLM_SHAKESPEARE", str(shakespeare))
    from benchmarks import throughput

    results = throughput.main(["--tiny", "--min-steps", "2", "--min-seconds", "0", "--inference-reps", "1", "--json"])
    row, *tasks = results
    assert row["row"].startswith("tiny") and row["charlm_chars_per_s"] > 0 and row["charlm_peak_mb"] >= 0
    assert ("ratio" in row) == ("bound" in row) == HAVE_TORCH
    assert row["gemm_share"] > 0 and tasks[0]["gemm_share"] > 0  # the GEMM-only floor ran
    assert row["accumulate_gain"]["min"] <= row["accumulate_gain"]["median"] <= row["accumulate_gain"]["max"]
    assert {t["task"] for t in tasks} == {"eval-val-split", "sample-1000", "score-1000-lines"}
    assert all(t["charlm_s"] > 0 and ("ratio" in t) == HAVE_TORCH for t in tasks)
    assert '"gemm_peak_gflops"' in capsys.readouterr().out


def test_throughput_fallback_side_runs_numpys_product_and_add(shakespeare, monkeypatch):
    """The side that measures blas.accumulate's gain computes the same step without OpenBLAS's
    GEMM, and leaves charlm's own side on it."""
    monkeypatch.setenv("CHARLM_SHAKESPEARE", str(shakespeare))
    from benchmarks import throughput
    from charlm.network import blas

    batches, V = throughput.load_batches(4, 8)
    calls = []
    real = blas._gemm

    def counted(dtype):
        calls.append(dtype)
        return real(dtype)

    monkeypatch.setattr(blas, "_gemm", counted)
    ours, fallback = (cls("lstm", 1, 16, V, batches) for cls in (throughput.CharlmStep, throughput.FallbackStep))
    for _ in range(3):
        calls.clear()
        a = ours.step()
        assert calls, "charlm's side did not ask for OpenBLAS's GEMM"
        calls.clear()
        assert fallback.step() == pytest.approx(a, rel=1e-5) and not calls
    assert blas._gemm is counted


def test_big_corpus_small(tmp_path, capsys):
    from benchmarks import big_corpus

    big_corpus.main(["--sizes", "2M", "--dir", str(tmp_path), "--steps", "1"])
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["bytes"] == 2_000_000 == (tmp_path / "corpus-2M.txt").stat().st_size
    assert row["load_first"]["chars"] > 1_900_000 and row["read"]["seconds"] > 0
    assert row["dry_run_first"]["memory_estimate_bytes"] > 0 and row["dry_run_cached"]["peak_rss_bytes"] > 0
    assert 0 < row["eval_share"]["eval_share"] < 1


def test_serve_benchmark_small(capsys):
    """A round with 1 and 2 clients against a real ``charlm serve``, the sample beside it, and
    the profile's two stream counts: every row is filled in and measured."""
    from benchmarks import serve

    rows = serve.main(["--clients", "1,2", "--tokens", "30", "--rounds", "1", "--profile", "--json"])
    one, two, sample, *profile = rows
    assert (one["clients"], two["clients"]) == (1, 2) and one["ratio_to_one_client"] == 1
    for row in (one, two):
        assert row["chars_per_s"] > 0 and 0 < row["first_char_ms"] < 60_000 and row["tokens"] == 30
    assert sample["sample_chars_per_s"] > 0
    assert [r["streams"] for r in profile] == [1, 16]
    assert all(r["forward_ms"] > 0 and r["engine_step_ms"] > 0 for r in profile)
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()[1:]]
    assert printed == rows


def _products(monkeypatch, fn):
    """(m, k, n) of every matrix product made by fn(): np.matmul calls, batched products
    expanded, and the products charlm.network.blas.accumulate adds to an array (the time loops')."""
    import numpy as np

    from charlm.network import blas

    seen, real, real_acc = [], np.matmul, blas.accumulate

    def spy(a, b, *args, **kw):
        batch = int(np.prod(np.broadcast_shapes(a.shape[:-2], b.shape[:-2])))
        seen.extend([(a.shape[-2], a.shape[-1], b.shape[-1] if b.ndim > 1 else 1)] * batch)  # A @ vector: n = 1
        return real(a, b, *args, **kw)

    def spy_acc(A, B, C):
        add = real_acc(A, B, C)

        def counted(s, s2):
            seen.append((A.shape[0], A.shape[1], B.shape[2]))
            add(s, s2)

        return counted

    monkeypatch.setattr(np, "matmul", spy)
    monkeypatch.setattr(blas, "accumulate", spy_acc)
    fn()
    monkeypatch.setattr(np, "matmul", real)
    monkeypatch.setattr(blas, "accumulate", real_acc)
    return sorted(seen)


def test_gemm_floor_makes_the_same_products_as_a_charlm_step(monkeypatch):
    """The benchmark's bound is only as true as its copy of charlm's matrix products."""
    import numpy as np

    from benchmarks.throughput import GemmFloor
    from charlm.config import ModelConfig
    from charlm.network.model import Model
    from charlm.text.batches import Batches

    V, T, B = 20, 7, 3
    ids = np.random.default_rng(0).integers(0, V, 500).astype(np.uint8)
    batches = Batches(ids, B, T)
    x, y = batches.window(0)
    for kind in ("lstm", "gru", "rnn"):
        m = Model(ModelConfig(type=kind, hidden_size=8, num_layers=2), V)
        m.init(np.random.default_rng(1))
        ours = _products(monkeypatch, lambda: m.loss_and_grad(x, y, m.zero_state(B)))
        floor = GemmFloor(kind, 2, 8, V, batches)
        assert _products(monkeypatch, floor.step) == ours, kind


def test_sweep_runs_a_grid_point_to_its_budget(shakespeare, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CHARLM_SHAKESPEARE", str(shakespeare))
    from benchmarks import sweep

    out = tmp_path / "sweep.jsonl"
    [r] = sweep.main(["--grid", "short", "--only", "1x128-lr5e-3", "--minutes", "0.02", "--out", str(out)])
    assert r["run"] == "1x128-lr5e-3" and r["params"] == 107_713  # LSTM 1x128 over 65 characters
    assert r["planned_steps"] >= 1 and 0 < r["steps"] <= r["planned_steps"] and r["final_val_loss"] < 4.2
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    assert lines[0]["grid"] == "short" and lines[-1] == r
    evals = [l for l in lines if "val_loss" in l]
    assert 1 <= len(evals) <= 4 and all(0 < a["minutes"] <= b["minutes"] for a, b in zip(evals, evals[1:]))
    assert "1x128-lr5e-3" in capsys.readouterr().out


@pytest.mark.torch  # both sides where PyTorch is installed
def test_quality_runs_both_sides_to_the_budget(shakespeare, monkeypatch, capsys):
    monkeypatch.setenv("CHARLM_SHAKESPEARE", str(shakespeare))
    from benchmarks import quality

    curves = quality.main(["--minutes", "0.01", "--json", "--set", "model.hidden_size=16", "--set", "model.num_layers=1",
                           "--set", "model.dropout=0"])
    assert set(curves) == ({"charlm", "torch"} if HAVE_TORCH else {"charlm"})
    for points in curves.values():
        assert len(points) == 1 and points[0]["minutes"] >= 0.01 and points[0]["steps"] > 0
        assert 0 < points[0]["val_loss"] < 4.5
    [charlm] = curves["charlm"]  # the network is what compares; the config's mixture is beside it
    assert charlm["val_loss_mixed"] < charlm["val_loss"]
    assert '"config": "lstm-shakespeare"' in capsys.readouterr().out


def test_quality_sides_take_turns_so_the_machine_slows_both_alike(monkeypatch):
    from benchmarks import quality

    clock, order = [0.0], []

    def step(trained_s, name):  # each step takes 2 ms of a fake clock: a loaded machine cannot change the turns
        order.append(name)
        clock[0] += 0.002

    monkeypatch.setattr(quality.time, "perf_counter", lambda: clock[0])
    sides = [quality.Curve(name, quality.SideBudget(minutes=0.001), lambda s, n=name: step(s, n),
                           lambda: {"val_loss": 1.0}, lambda r: None) for name in ("a", "b")]  # 0.06 s of training each
    quality.take_turns(sides, block=0.01, pause_s=0)
    assert all(c.done and c.trained >= 0.06 and len(c.points) == 1 for c in sides)
    assert order == (["a"] * 5 + ["b"] * 5) * 6  # turns of 0.01 s, not one side's whole run and then the other's


@pytest.mark.torch  # both sides where PyTorch is installed
def test_quality_step_budget_gives_each_side_the_same_steps(shakespeare, monkeypatch):
    """--steps: every side makes exactly the budget's steps, evaluated after each tenth, with the
    config's step limit set to them and no time limit, so the schedule ends with them."""
    monkeypatch.setenv("CHARLM_SHAKESPEARE", str(shakespeare))
    from benchmarks import quality

    small = ["--set", "model.hidden_size=16", "--set", "model.num_layers=1", "--set", "model.dropout=0"]
    curves = quality.main(["--steps", "20", "--json", *small])
    assert set(curves) == ({"charlm", "torch"} if HAVE_TORCH else {"charlm"})
    for points in curves.values():
        assert [p["steps"] for p in points] == list(range(2, 21, 2))
    seen = []
    monkeypatch.setattr(quality, "run_torch", lambda *a: pytest.fail("--side charlm ran PyTorch's side"))
    real = quality.run_charlm

    def spy(cfg, budget, log):
        curve = real(cfg, budget, log)
        seen.append(cfg.train)
        return curve

    monkeypatch.setattr(quality, "run_charlm", spy)
    assert set(quality.main(["--steps", "3", "--side", "charlm", "--json", *small])) == {"charlm"}
    assert seen[0].max_steps == 3 and seen[0].max_minutes is None


@needs_torch
def test_quality_torch_side_starts_from_charlms_weights(shakespeare, monkeypatch):
    """Both sides of the quality benchmark start from one draw of the weights: at step 0 they
    assign the same probability to the same text (a twin with its own draw: 4.172 against 4.177 here);
    and PyTorch's Adam gets the config's betas and epsilon, not its own defaults."""
    monkeypatch.setenv("CHARLM_SHAKESPEARE", str(shakespeare))
    from benchmarks import quality
    from charlm.config import load_config
    from charlm.training.trainer import Trainer
    from charlm.use.score import evaluate

    cfg = load_config(quality.ROOT / "configs" / "lstm-shakespeare.yaml",
                      ["model.hidden_size=16", "model.dropout=0.3", "train.seed=3", "train.beta1=0.8",
                       "train.beta2=0.99", "train.eps=1e-7"])
    tw = quality.torch_twin(cfg)
    tr = Trainer(cfg, shakespeare, out_dir=None)
    ids = tr.val_ids[:4000]
    ours = evaluate(tr.model, ids, 8, 50)
    tw.rnn.eval()
    assert float(tw.evaluate(ids, 8, 50)) == pytest.approx(ours, rel=1e-5)
    assert tw.rnn.dropout == 0.3
    group = tw.opt.param_groups[0]
    assert group["betas"] == (0.8, 0.99) and group["eps"] == 1e-7 and group["lr"] == cfg.train.lr


@needs_torch
@pytest.mark.parametrize("kind", ["lstm", "rnn"])
def test_quality_gives_pytorch_charlms_dropout_masks(shakespeare, monkeypatch, kind):
    """PyTorch's side multiplies in the masks charlm's trainer draws: step by step the two
    losses agree to float32 rounding, where with nn.LSTM's own dropout they part in the second
    or third digit. PyTorch's recurrent bias is frozen here, so its one trained bias per gate
    row takes charlm's step (with both trained, their sum moves twice as far). (Not the GRU,
    whose candidate rows need both of PyTorch's biases.)"""
    monkeypatch.setenv("CHARLM_SHAKESPEARE", str(shakespeare))
    from benchmarks import quality
    from charlm.config import load_config

    real = quality.torch_twin

    def one_bias(cfg):
        twin = real(cfg)
        for name, p in twin.rnn.named_parameters():
            if name.startswith("bias_hh"):
                p.requires_grad_(False)
        return twin

    monkeypatch.setattr(quality, "torch_twin", one_bias)
    over = [f"model.type={kind}", "model.hidden_size=24", "model.num_layers=3", "model.dropout=0.5", "train.seed=5",
            "data.batch_size=4", "data.seq_length=20", "train.max_steps=6",
            "train.max_minutes=null", "train.epochs=null"]
    cfg = load_config(quality.ROOT / "configs" / "lstm-shakespeare.yaml", over)

    def losses(curve):
        out = []
        for _ in range(6):
            if curve.prepare:
                curve.prepare()
            out.append(curve.step(0.0))
        return out

    ours = losses(quality.run_charlm(cfg, quality.SideBudget(steps=6), print))
    for budget in (quality.SideBudget(steps=6), quality.SideBudget(minutes=1)):
        assert losses(quality.run_torch(cfg, budget, print)) == pytest.approx(ours, rel=2e-5)
    monkeypatch.setattr(quality, "mask_replay", lambda cfg: None)
    theirs = losses(quality.run_torch(cfg, quality.SideBudget(steps=6), print))  # nn.LSTM's own dropout
    assert max(abs(a - b) for a, b in zip(theirs[1:], ours[1:])) > 1e-3
    monkeypatch.undo()
    monkeypatch.setenv("CHARLM_SHAKESPEARE", str(shakespeare))
    assert quality.mask_replay(load_config(quality.ROOT / "configs" / "lstm-shakespeare.yaml",
                                           over + ["model.dropout=0"])) is None


@needs_torch
def test_torch_twin_given_masks_still_pays_for_its_own_draw():
    """With masks, the twin's step draws nn.LSTM's dropout masks all the same (torch's generator
    moves on), so a time budget charges PyTorch its dropout; without dropout set, it draws nothing."""
    import numpy as np
    import torch

    from benchmarks.common import TorchTwin

    tw = TorchTwin("lstm", 2, 8, 5)
    x = np.arange(12).reshape(4, 3) % 5
    ones = [torch.ones(4, 3, 8)]
    tw.step(x, x, masks=ones)  # the first makes the one-layer views, which draw their own initial weights
    for p, moves in ((0.0, False), (0.3, True)):
        tw.rnn.dropout = p
        before = torch.get_rng_state()
        tw.step(x, x, masks=ones)
        assert (not torch.equal(before, torch.get_rng_state())) == moves


def test_before_after_times_both_trees_and_leaves_no_worktree(shakespeare, monkeypatch, capsys):
    monkeypatch.setenv("CHARLM_SHAKESPEARE", str(shakespeare))
    from benchmarks import before_after

    def worktrees():
        return subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True).stdout

    there = worktrees()
    r = before_after.main(["HEAD", "--config", "configs/rnn-tiny.yaml", "--rounds", "2", "--steps", "2"])
    assert r["before_ms"] > 0 and r["after_ms"] > 0 and r["ratio"]["min"] <= r["ratio"]["median"] <= r["ratio"]["max"]
    assert worktrees() == there
