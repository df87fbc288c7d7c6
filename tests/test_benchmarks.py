"""Smoke tests so the benchmarks cannot rot: one tiny row, both backends where torch is installed."""

import os

from .conftest import HAVE_TORCH


def test_throughput_tiny_row(shakespeare, monkeypatch, capsys):
    monkeypatch.setenv("CHARLM_SHAKESPEARE", str(shakespeare))
    from benchmarks import throughput

    results = throughput.main(["--tiny", "--min-steps", "2", "--min-seconds", "0", "--inference-reps", "1", "--json"])
    row, *tasks = results
    assert row["row"].startswith("tiny") and row["charlm_chars_per_s"] > 0 and row["charlm_peak_mb"] >= 0
    assert ("ratio" in row) == HAVE_TORCH
    assert {t["task"] for t in tasks} == {"eval-val-split", "sample-1000", "score-1000-lines"}
    assert all(t["charlm_s"] > 0 and ("ratio" in t) == HAVE_TORCH for t in tasks)
    assert '"gemm_peak_gflops"' in capsys.readouterr().out


def test_scale_small(tmp_path):
    from benchmarks import scale

    [rec] = scale.main(["--sizes-mb", "0.2", "--dir", str(tmp_path)])
    assert rec["bytes_per_char"] == 1 and rec["chars"] > 0 and rec["seconds"] > 0
    assert os.listdir(tmp_path) == []  # generated corpora are removed
