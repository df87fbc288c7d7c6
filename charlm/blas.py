"""Which kernels NumPy's matrix products run on, and whether the environment holds them back.

NumPy's wheels bundle OpenBLAS, which picks its kernels for the CPU it finds when it loads,
unless OPENBLAS_CORETYPE names others. On the 2-core reference machine that variable was set to
Haswell (AVX2) on a CPU with AVX-512: a 2048^3 product ran at 239 instead of 461 GFLOP/s and an
LSTM 2x384 training step took 1.5x as long (docs/performance.md). A training step is mostly
matrix products, so ``charlm train`` says so when it happens; it does not change the variable,
which someone set on purpose.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

_GETTERS = ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename64_",
            "openblas_get_corename")


def core() -> str | None:
    """The OpenBLAS core (kernel family) NumPy runs on in this process, e.g. "SkylakeX", or None
    where NumPy is not on OpenBLAS or the library cannot be asked (not Linux)."""
    import numpy  # noqa: F401  (loads the library this asks)

    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.rsplit("/", 1)[-1]})
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _GETTERS:
            getter = getattr(lib, name, None)
            if getter is not None:
                getter.restype = ctypes.c_char_p
                return getter().decode(errors="replace")
    return None


def forced_core_note() -> str | None:
    """One line when OPENBLAS_CORETYPE makes OpenBLAS run other kernels than it picks for this
    CPU by itself (asked of a child process without the variable); otherwise None."""
    forced = os.environ.get("OPENBLAS_CORETYPE")
    here = core() if forced else None
    if here is None:
        return None
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    try:
        # As a module from the folder that holds the package, so the child imports this charlm.
        out = subprocess.run([sys.executable, "-m", "charlm.blas"], env=env, cwd=Path(__file__).parents[1],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    own = out.stdout.strip()
    if out.returncode or own in ("", "None", here):
        return None
    return (f"note: NumPy's matrix products run OpenBLAS's {here} kernels because OPENBLAS_CORETYPE={forced[:20]} "
            f"is set; by itself OpenBLAS picks {own[:20]} for this CPU, which may train much faster "
            "(unset the variable to use it)")


if __name__ == "__main__":  # forced_core_note's child: OpenBLAS's own choice
    print(core())
