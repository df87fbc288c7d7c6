"""The trainer (charlm/training/trainer.py): checkpoints and metrics, exact resume, budgets, early stopping, refusals."""

import json

import numpy as np
import pytest

from charlm.config import TrainConfig, load_config
from charlm.errors import CheckpointError, CorpusError, RunExistsError, TrainingError
from charlm.network.optim import OPTIMIZERS
from charlm.network.schedule import Budget
from charlm.predict.checkpoint import load_checkpoint
from charlm.training.rundir import RunDir, read_records
from charlm.training.state import CorpusMismatchError
from charlm.training.trainer import Trainer, train
from charlm.use.sample import generate
from charlm.use.score import evaluate
from tests.helpers import tiny_overrides


def losses(out_dir):
    return [json.loads(l) for l in (out_dir / "metrics.jsonl").read_text().splitlines()]


def test_train_writes_checkpoints_and_metrics(corpus_file, tmp_path):
    cfg = load_config(None, tiny_overrides())
    res = train(cfg, corpus_file, tmp_path / "run")
    assert res.step == 30 and res.reason == "max_steps"
    rows = losses(tmp_path / "run")
    assert [r["step"] for r in rows] == [10, 20, 30]
    assert set(rows[0]) == {"step", "epoch", "elapsed_s", "train_loss", "val_loss", "val_bpc", "lr", "chars_per_s"}
    assert rows[-1]["val_loss"] < rows[0]["val_loss"] < np.log(15)
    assert load_checkpoint(tmp_path / "run" / "best.npz").meta["best_val"] == min(r["val_loss"] for r in rows)
    assert load_checkpoint(tmp_path / "run" / "last.npz").meta["step"] == 30


def test_same_seed_same_curve(corpus_file, tmp_path):
    cfg = load_config(None, tiny_overrides(**{"model.dropout": 0.2, "train.max_steps": 20}))
    train(cfg, corpus_file, tmp_path / "a")
    train(cfg, corpus_file, tmp_path / "b")
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert [r["val_loss"] for r in a] == [r["val_loss"] for r in b]
    cfg2 = load_config(None, tiny_overrides(**{"model.dropout": 0.2, "train.max_steps": 20, "train.seed": 5}))
    train(cfg2, corpus_file, tmp_path / "c")
    assert [r["val_loss"] for r in losses(tmp_path / "c")] != [r["val_loss"] for r in a]


@pytest.mark.parametrize("kind, opt, noise", [("lstm", "adam", {"model.dropout": 0.1}),
                                              ("gru", "rmsprop", {"model.dropout": 0.1}),
                                              ("rnn", "sgd", {"model.dropout": 0.1}),
                                              ("lstm", "adam", {"model.variational_dropout": 0.1})])
def test_interrupted_and_resumed_equals_uninterrupted(corpus_file, tmp_path, kind, opt, noise):
    """Stop at step 13 (mid-epoch, dropout or variational dropout on, cosine schedule),
    resume: identical losses, weights and optimizer state."""
    over = tiny_overrides(**{"model.type": kind, "train.optimizer": opt, **noise,
                             "train.lr_schedule": "cosine", "train.warmup_steps": 5, "train.max_steps": 40,
                             "data.seq_length": 20, "data.batch_size": 8})
    cfg = load_config(None, over)
    full = train(cfg, corpus_file, tmp_path / "full")
    calls = iter(range(10**6))
    part = train(cfg, corpus_file, tmp_path / "part", should_stop=lambda: next(calls) >= 12)
    assert part.reason == "interrupted" and part.step == 13
    ck = load_checkpoint(tmp_path / "part" / "last.npz")
    assert ck.meta["step"] == 13 and 0 < ck.meta["batch"]
    resumed = Trainer.resume(tmp_path / "part" / "last.npz", corpus_file, ck.config).run()
    assert resumed.step == full.step and resumed.epoch == full.epoch
    keys = ("step", "epoch", "train_loss", "val_loss", "lr")
    assert [[r[k] for k in keys] for r in losses(tmp_path / "part")] == [[r[k] for k in keys] for r in losses(tmp_path / "full")]
    a = load_checkpoint(tmp_path / "full" / "last.npz")
    b = load_checkpoint(tmp_path / "part" / "last.npz")
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    assert set(a.optim) == set(b.optim) == set(OPTIMIZERS[opt].slots)
    for slot in a.optim:
        for name in a.params:
            np.testing.assert_array_equal(a.optim[slot][name], b.optim[slot][name])


def test_best_npz_is_what_evaluation_scored_and_sampled(corpus_file, tmp_path):
    cfg = load_config(None, tiny_overrides(**{"train.max_steps": 20, "train.eval_every": 20,
                                              "train.sample_length": 20}))
    tr = Trainer(cfg, corpus_file, tmp_path / "r")
    tr.run()
    best = load_checkpoint(tmp_path / "r" / "best.npz")
    for name, sl in tr.model.slices.items():  # one evaluation, at step 20, the last step
        np.testing.assert_array_equal(best.params[name].reshape(-1), tr.model.flat[sl])
    [record] = losses(tmp_path / "r")
    d = cfg.data
    assert record["val_loss"] == evaluate(best.build_model(), tr.val_ids, d.batch_size, d.seq_length)
    [s] = [json.loads(x) for x in (tmp_path / "r" / "samples.jsonl").read_text().splitlines()]
    [again] = generate(best.build_model(), tr.vocab, "\n", 20, temperature=cfg.train.sample_temperature,
                       seed=cfg.train.seed)
    assert s["text"] == again.text


def test_epoch_budget_and_epoch_reset(corpus_file, tmp_path):
    cfg = load_config(None, tiny_overrides(**{"train.max_steps": "null", "train.epochs": 2, "data.batch_size": 16,
                                              "data.seq_length": 32, "train.eval_every": 1000}))
    tr = Trainer(cfg, corpus_file, tmp_path / "r")
    res = tr.run()
    assert res.reason == "epochs" and res.epoch == 2 and res.step == 2 * tr.batches.num_windows


def test_resume_refuses_model_change(corpus_file, tmp_path):
    cfg = load_config(None, tiny_overrides(**{"train.max_steps": 10}))
    train(cfg, corpus_file, tmp_path / "r")
    ck = load_checkpoint(tmp_path / "r" / "last.npz")
    changed = load_config(None, ["model.hidden_size=32"], base=ck.config)
    with pytest.raises(CheckpointError, match="different model section"):
        Trainer.resume(ck, corpus_file, changed)


def test_resume_refuses_other_vocabulary(corpus_file, tmp_path):
    cfg = load_config(None, tiny_overrides(**{"train.max_steps": 10}))
    train(cfg, corpus_file, tmp_path / "r")
    other = tmp_path / "other.txt"
    other.write_text("XYZ " * 2000)
    with pytest.raises(CorpusError, match="other.txt: has characters outside the checkpoint's vocabulary: 'X'"):
        Trainer.resume(tmp_path / "r" / "last.npz", other, cfg)


def test_non_finite_loss_stops_with_step_and_advice(corpus_file, tmp_path):
    cfg = load_config(None, tiny_overrides(**{"train.max_steps": 30}))
    tr = Trainer(cfg, corpus_file, tmp_path / "r")
    real = tr.model.loss_and_grad

    def poisoned(*a, **k):
        loss, st = real(*a, **k)
        if tr.state.step == 14:
            tr.model.grad[3] = np.inf
        return loss, st

    tr.model.loss_and_grad = poisoned
    with pytest.raises(TrainingError, match=r"step 15: gradient norm is not finite; lower train.lr"):
        tr.run()
    last = load_checkpoint(tmp_path / "r" / "last.npz")
    assert last.meta["step"] == 10 and np.isfinite(last.params["l0/Wx"]).all()


def test_lr_schedules():
    from charlm.config import TrainConfig
    from charlm.network.schedule import Schedule

    s = Schedule(TrainConfig(lr_schedule="step", lr=1.0, lr_decay=0.5, lr_decay_every=2), None)
    assert [s(0, e) for e in range(5)] == [1.0, 1.0, 0.5, 0.5, 0.25]
    c = Schedule(TrainConfig(lr_schedule="cosine", lr=1.0, warmup_steps=10, min_lr=0.1, max_steps=110, epochs=None), 110)
    assert c(0, 0) == pytest.approx(0.1) and c(9, 0) == pytest.approx(1.0)
    assert c(60, 0) == pytest.approx(0.55) and c(110, 0) == pytest.approx(0.1)
    lin = Schedule(TrainConfig(lr_schedule="linear", lr=1.0, warmup_steps=10, min_lr=0.0, max_steps=110), 110)
    assert lin(60, 0) == pytest.approx(0.5) and lin(85, 0) == pytest.approx(0.25) and lin(110, 0) == 0.0
    wsd = Schedule(TrainConfig(lr_schedule="linear", lr=1.0, warmup_steps=10, min_lr=0.0, max_steps=110,
                               cooldown=0.2), 110)  # holds for 80 steps after the warm-up, then 20 down
    assert wsd(60, 0) == 1.0 and wsd(90, 0) == 1.0 and wsd(100, 0) == pytest.approx(0.5) and wsd(110, 0) == pytest.approx(0.0, abs=1e-12)


def test_a_decaying_schedule_ends_with_whichever_budget_binds_first():
    """10,000 steps or one minute: at 0.1 s a step the minute binds, and the schedule is half
    done at 30 s (step 300), not at step 5,000; a machine ten times faster finishes it in steps."""
    from charlm.config import TrainConfig
    from charlm.network.schedule import Schedule

    cfg = TrainConfig(lr_schedule="cosine", lr=1.0, min_lr=0.0, warmup_steps=0, max_steps=10_000, max_minutes=1.0)
    s = Schedule(cfg, 10_000)
    assert s(300, 0, 30.0) == pytest.approx(0.5) and s(599, 0, 59.9) < 1e-4
    assert s(5_000, 0, 3.0) == pytest.approx(0.5)  # the fast machine: steps bind
    assert s.progress(10, 600.0) == 1.0 and s.progress(0, 0.0) == 0.0
    steps_only = Schedule(TrainConfig(lr_schedule="cosine", lr=1.0, max_steps=100), 100)
    assert steps_only(50, 0, 1e9) == pytest.approx(0.5)  # no max_minutes: time does not count


def test_budget_answers_total_and_spent():
    b = Budget(TrainConfig(max_steps=100, epochs=2, max_minutes=1.0), steps_per_epoch=30)
    assert b.total_steps == 60
    assert b.spent(59, 0.0) is None and b.spent(60, 0.0) == "epochs" and b.spent(10, 61.0) == "max_minutes"
    b = Budget(TrainConfig(max_steps=50, epochs=2, patience=3), steps_per_epoch=30)
    assert b.total_steps == 50 and b.spent(50, 0) == "max_steps" and b.spent(5, 0, stale_evals=3) == "early_stopping"

def test_recorded_lr_is_the_one_the_step_used(corpus_file, tmp_path):
    cfg = load_config(None, tiny_overrides(**{"train.lr_schedule": "step", "train.lr_decay": 0.5, "train.epochs": 3,
                                              "train.max_steps": "null", "train.eval_every": 1}))
    tr = Trainer(cfg, corpus_file, tmp_path / "r")
    used = []
    real = tr.optimizer.step
    tr.optimizer.step = lambda g, lr: (used.append(lr), real(g, lr))
    tr.run()
    lrs = [__import__("json").loads(l)["lr"] for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert lrs == used and len(set(lrs)) == 3

def test_new_run_refuses_a_run_directory_unless_overwrite(corpus_file, tmp_path):
    cfg = load_config(None, tiny_overrides(**{"train.max_steps": 10}))
    train(cfg, corpus_file, tmp_path / "r")
    with pytest.raises(RunExistsError, match="already holds a run \\(step 10, best val"):
        train(cfg, corpus_file, tmp_path / "r")
    assert train(cfg, corpus_file, tmp_path / "r", overwrite=True).step == 10

def test_fine_tuning_on_a_new_corpus_starts_its_first_window(corpus_file, tmp_path):
    cfg = load_config(None, tiny_overrides(**{"train.max_steps": 13}))
    train(cfg, corpus_file, tmp_path / "r")
    other = tmp_path / "other.txt"
    other.write_text("hello hero hole\n" * 300, encoding="utf-8")
    with pytest.raises(CorpusMismatchError, match="allow_new_corpus=True"):
        Trainer.resume(tmp_path / "r", other)
    tr = Trainer.resume(tmp_path / "r", other, allow_new_corpus=True)
    assert tr.state.batch == 0 and tr.hidden is None and tr.state.step == 13
    assert tr.events[0]["previous"]["path"] == str(corpus_file) and tr.events[0]["corpus"]["chars"] == 16 * 300

def test_early_stopping_counts_evaluations_without_min_delta(corpus_file, tmp_path):
    cfg = load_config(None, tiny_overrides(**{"train.max_steps": 500, "train.eval_every": 5, "train.patience": 3,
                                              "train.min_delta": 0.01, "train.lr": 1e-7}))
    res = train(cfg, corpus_file, tmp_path / "r")
    assert res.reason == "early_stopping" and res.step == 20  # reference at 5, then 10, 15, 20 without 0.01
    again = Trainer.resume(tmp_path / "r", corpus_file).run()  # a stopped run stays stopped
    assert again.step == 20 and again.reason == "early_stopping"


def test_train_state_round_trips_through_checkpoint_metadata():
    import json as _json

    from charlm.training.state import TrainState

    st = TrainState(step=7, epoch=1, batch=3, elapsed_s=1.5, best_val=2.0, last_val=2.1, loss_sum=4.2, loss_count=2,
                    plateau_ref=2.0, stale_evals=1, lr=0.003, mix_weight=0.4, lineage={"source": "bundled"},
                    rng=np.random.default_rng(5))
    st.rng.random(3)
    back = TrainState.from_meta(_json.loads(_json.dumps(st.to_meta())))  # as a checkpoint stores it
    assert back.to_meta() == st.to_meta() and back.rng.random() == st.rng.random()
    assert back.epochs(6) == 1.5
    with pytest.raises(CheckpointError, match="lacks training progress"):
        TrainState.from_meta({"step": 1})


def test_evaluation_scores_a_fixed_sample_and_full_eval_the_whole_split(corpus_file, tmp_path):
    from charlm.text.batches import eval_sample

    ids = np.arange(10_000, dtype=np.int64)
    a, b = eval_sample(ids, 2000, 8), eval_sample(ids, 2000, 8)
    np.testing.assert_array_equal(a, b)  # the same characters at every evaluation
    assert len(a) == 2000 and a[0] == 0 and a[-1] == 9_999  # eight stretches spread over all of it
    assert eval_sample(ids, 20_000, 8) is ids and eval_sample(ids, None, 8) is ids
    cfg = load_config(None, tiny_overrides(**{"train.eval_chars": 1000, "data.val_fraction": 0.3,
                                              "model.ngram_order": 3}))
    tr = Trainer(cfg, corpus_file, tmp_path / "r")
    assert len(tr.eval_ids) == 1000 < len(tr.val_ids)
    tr.run(full_eval=True)
    records = read_records(tmp_path / "r" / "metrics.jsonl")
    full = [r for r in records if r.get("event") == "full_eval"]
    assert len(full) == 1 and full[0]["val_chars_full"] == len(tr.val_ids) and full[0]["step"] == 30
    assert full[0]["val_loss_full"] != records[-2]["val_loss"]  # another text than the sample
    assert len(RunDir(tmp_path / "r").evaluations()) == 3  # the event is not an evaluation
