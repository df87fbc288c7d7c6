"""NumPy's OpenBLAS asked directly (charlm/network/blas.py): the kernels it runs, and its GEMM with
beta 1, against NumPy and on its fallback."""

import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from charlm.network import blas
from tests.helpers import charlm, random_text, tiny_overrides

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


@x86
def test_core_names_the_kernels_numpy_runs_and_the_dry_run_reports_them(tmp_path, monkeypatch):
    code = "import json; from charlm.network.blas import core; print(json.dumps(core()))"
    own, forced = _in_child(code, None), _in_child(code, "Prescott")
    assert own and forced == "Katmai" != own
    corpus = tmp_path / "c.txt"
    corpus.write_text(random_text(3000, seed=3))
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Prescott")
    r = charlm("train", corpus, *[x for o in tiny_overrides() for x in ("--set", o)], "--dry-run", "--json",
               cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["blas_core"] == "Katmai", r.stderr


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("feature_major", [False, True])
def test_accumulate_adds_each_steps_product_to_its_block_only(dtype, feature_major):
    """C[s2] += A @ B[s], into contiguous (S, M, N) steps or the strided steps of an (M, S, N)
    buffer seen through its transpose (a dense layer's projection); other steps untouched."""
    rng = np.random.default_rng(0)
    M, K, N, S = 12, 5, 4, 6
    A = rng.standard_normal((M, K)).astype(dtype)
    B = rng.standard_normal((S + 1, K, N)).astype(dtype)
    buf = rng.standard_normal((M, S, N) if feature_major else (S, M, N)).astype(dtype)
    C = buf.transpose(1, 0, 2) if feature_major else buf
    want = C.copy()
    add = blas.accumulate(A, B, C)
    for s, s2 in ((0, 0), (3, 1), (6, 5), (3, 1)):
        add(s, s2)
        want[s2] += A @ B[s]
    np.testing.assert_allclose(C, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)
    assert not np.array_equal(want[1], C[2])  # (a check that can fail: steps differ)
    with pytest.raises(IndexError):  # a step outside the arrays never reaches the raw pointers
        add(S + 1, 0)


def test_accumulate_falls_back_on_numpy_where_cblas_cannot_read_the_arrays():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((5, 8)).T.astype(np.float32)  # (8, 5), not C-contiguous
    B = rng.standard_normal((2, 5, 3)).astype(np.float32)
    C = np.zeros((2, 8, 3), np.float32)
    blas.accumulate(A, B, C)(1, 0)
    np.testing.assert_allclose(C[0], A @ B[1], rtol=1e-6)
    assert not C[1].any()
    one = np.zeros((1, 8, 1), np.float32)  # one column (batch 1): NumPy's GEMV
    blas.accumulate(A, B[:, :, :1], one)(0, 0)
    np.testing.assert_allclose(one[0], A @ B[0, :, :1], rtol=1e-6)


def test_accumulate_runs_openblas_gemm_exactly_where_numpy_is_on_openblas():
    """Where it is (every Linux wheel), the two tests above test the CBLAS path, not the fallback."""
    on_openblas = blas.core() is not None
    assert (blas._gemm(np.dtype(np.float32)) is not None) == on_openblas
    assert (blas._gemm(np.dtype(np.float64)) is not None) == on_openblas
