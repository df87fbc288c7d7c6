"""NumPy's OpenBLAS, asked directly: which kernels its matrix products run on (the dry run and
the benchmarks report it), and the one product NumPy does not offer, C += A @ B.

NumPy's wheels bundle OpenBLAS, which picks its kernels for the CPU it finds when it loads,
unless OPENBLAS_CORETYPE names others; the benchmarks unset that variable in their commands, so
they measure what a user's machine runs.

Shape letters: M, K, N of a product (M, K) @ (K, N); S a sequence of steps.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np

_GETTERS = ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename64_",
            "openblas_get_corename")
# CBLAS GEMM's names in the builds NumPy ships or links: (prefix, suffix); a "64_" suffix marks
# the 64-bit-integer interface of NumPy's own wheels.
_GEMM_NAMES = (("scipy_cblas_", "64_"), ("cblas_", "64_"), ("scipy_cblas_", ""), ("cblas_", ""))
_ROW_MAJOR, _NO_TRANS = 101, 111


@functools.cache
def _openblas() -> ctypes.CDLL | None:
    """The OpenBLAS library loaded in this process, NumPy's own copy first; None where there is
    none (NumPy on another BLAS) or it cannot be found (not Linux)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.rsplit("/", 1)[-1]}
    except OSError:
        return None
    for path in sorted(paths, key=lambda p: ("numpy" not in p, p)):
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


def core() -> str | None:
    """The OpenBLAS core (kernel family) NumPy runs on in this process, e.g. "SkylakeX", or None
    where NumPy is not on OpenBLAS or the library cannot be asked (not Linux)."""
    lib = _openblas()
    for name in _GETTERS if lib is not None else ():
        getter = getattr(lib, name, None)
        if getter is not None:
            getter.restype = ctypes.c_char_p
            return getter().decode(errors="replace")
    return None


@functools.cache
def _gemm(dtype: np.dtype):
    """OpenBLAS's CBLAS sgemm or dgemm for ``dtype``, checked on a small product against NumPy's;
    None where there is none or the check fails (then ``accumulate`` falls back on NumPy)."""
    lib = _openblas()
    letter = {np.dtype(np.float32): "s", np.dtype(np.float64): "d"}.get(np.dtype(dtype))
    if lib is None or letter is None:
        return None
    real = ctypes.c_float if letter == "s" else ctypes.c_double
    for prefix, suffix in _GEMM_NAMES:
        fn = getattr(lib, f"{prefix}{letter}gemm{suffix}", None)
        if fn is None:
            continue
        n, p = (ctypes.c_int64 if suffix else ctypes.c_int32), ctypes.c_void_p
        fn.argtypes = [n, n, n, n, n, n, real, p, n, p, n, real, p, n]
        fn.restype = None
        rng = np.random.default_rng(0)
        A, B, C = (rng.standard_normal(s).astype(dtype) for s in ((3, 4), (4, 5), (3, 5)))
        want = C + A @ B
        fn(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, 3, 5, 4, 1.0, A.ctypes.data, 4, B.ctypes.data, 5, 1.0, C.ctypes.data, 5)
        return fn if np.allclose(C, want) else None
    return None


def accumulate(A: np.ndarray, B: np.ndarray, C: np.ndarray):
    """A (M, K), B (S, K, N), C (S', M, N) -> add(s, s2), which does C[s2] += A @ B[s].

    OpenBLAS's GEMM with beta = 1 adds the product inside its kernel, while each thread still
    holds its block of C: NumPy's ``np.matmul(A, B[s], out=tmp); C[s2] += tmp`` makes a second
    pass over C. Each step's blocks may be slices of a larger array (a row stride of their own,
    unit stride within a row), so a time loop can add into a feature-major (M, S, N) buffer
    through its (S, M, N) transpose. A is read when add runs, so it may change between calls;
    B and C are fixed when add is made. Falls back on NumPy where OpenBLAS is not NumPy's
    BLAS, the arrays do not fit CBLAS, or N is 1.
    """
    (M, K), (S, _, N), S2 = A.shape, B.shape, C.shape[0]
    # One column (batch 1: sampling, min-char-rnn) stays with NumPy, whose matmul runs OpenBLAS's
    # GEMV there: GEMM with beta 1 made the min-char-rnn row's step slower. This path is
    # also the one a sampled character pays for at every layer, so it checks nothing more.
    gemm = _gemm(A.dtype) if N > 1 and A.dtype == B.dtype == C.dtype and M * K else None
    it = A.itemsize
    if gemm is None or not (A.flags.c_contiguous and _rows(B[0], it) and _rows(C[0], it) and C.flags.writeable):

        def add(s, s2):
            c = C[s2]
            c += A @ B[s]

        return add
    assert B.shape[1] == K and C.shape[1:] == (M, N), (A.shape, B.shape, C.shape)
    a, b0, sb, ldb, c0, sc, ldc = A.ctypes.data, B.ctypes.data, B.strides[0], B.strides[1] // it, C.ctypes.data, C.strides[0], C.strides[1] // it

    def add(s, s2, _keep=(A, B, C)):  # _keep: the arrays must outlive the raw pointers
        if not (0 <= s < S and 0 <= s2 < S2):
            raise IndexError(f"step {s} of {S} or {s2} of {S2}")
        gemm(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, M, N, K, 1.0, a, K, b0 + s * sb, ldb, 1.0, c0 + s2 * sc, ldc)

    return add


def _rows(X: np.ndarray, itemsize: int) -> bool:
    """Whether a 2-D block is what CBLAS reads in row-major order: unit stride within each row,
    rows at a positive whole number of elements apart, no shorter than a row."""
    r, c = X.strides
    return c == itemsize and r > 0 and r % itemsize == 0 and r // itemsize >= X.shape[1]


def matmul_add(A: np.ndarray, B: np.ndarray, C: np.ndarray) -> None:
    """C (M, N) += A (M, K) @ B (K, N): ``accumulate`` for one product."""
    accumulate(A, B[None], C[None])(0, 0)
