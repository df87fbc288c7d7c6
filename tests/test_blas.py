"""The note ``charlm train`` prints when OPENBLAS_CORETYPE holds NumPy's products to other kernels
than OpenBLAS picks for the CPU (on the reference machine: half the GEMM speed)."""

import json
import os
import platform
import subprocess
import sys

import pytest

from .conftest import random_text, tiny_overrides
from .test_console import charlm

# Katmai is OpenBLAS's oldest x86 kernel family (Prescott selects it): no x86-64 CPU of today
# gets it by OpenBLAS's own choice, so forcing it always differs from that choice.
x86 = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="OpenBLAS core names are x86's")


def _in_child(code, coretype):
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    if coretype:
        env["OPENBLAS_CORETYPE"] = coretype
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


CODE = "import json; from charlm.blas import core, forced_core_note as n; print(json.dumps([core(), n()]))"


@x86
def test_the_variable_forces_the_kernels_and_the_note_names_both():
    own, no_note = _in_child(CODE, None)
    forced, note = _in_child(CODE, "Prescott")
    assert own and no_note is None  # nothing forced, nothing to say
    assert forced == "Katmai" != own
    assert note.startswith("note: ") and "OPENBLAS_CORETYPE=Prescott" in note and f"picks {own} " in note
    same, note = _in_child(CODE, own)  # forcing what OpenBLAS would pick anyway is not worth a note
    assert same == own and note is None


@x86
def test_train_prints_the_note_and_dry_run_json_carries_it(tmp_path, monkeypatch):
    corpus = tmp_path / "c.txt"
    corpus.write_text(random_text(3000, seed=3))
    sets = [x for o in tiny_overrides() for x in ("--set", o)]
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Prescott")
    r = charlm("train", corpus, *sets, "--dry-run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith("note: NumPy's matrix products run OpenBLAS's Katmai kernels"), r.stderr
    r = charlm("train", corpus, *sets, "--dry-run", "--json", cwd=tmp_path)
    report = json.loads(r.stdout)
    assert report["blas_core"] == "Katmai" and "OPENBLAS_CORETYPE=Prescott" in report["blas_note"]
    assert "note:" not in r.stderr  # --json keeps stderr for errors
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    r = charlm("train", corpus, *sets, "--dry-run", cwd=tmp_path)
    assert r.returncode == 0 and "note:" not in r.stderr, r.stderr
