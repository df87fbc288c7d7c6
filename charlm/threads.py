"""How many BLAS threads a process runs, decided before NumPy loads OpenBLAS (which reads the
variables once, when it loads). Imports nothing that imports NumPy.

A data-parallel rank is one worker on one core: ranks with BLAS threads of their own would
oversubscribe the cores and spin against each other. ``charlm train --workers N`` starts its
ranks with one thread each (launch.py); under a plain ``mpiexec -n N charlm ...`` with more
than one rank, ``one_thread_per_rank`` (called first thing by ``import charlm``) does the same,
unless the user set a count.
"""

from __future__ import annotations

import os

SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")  # set by MPICH's and Open MPI's launchers
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def under_launcher() -> bool:
    """Whether an MPI launcher (mpiexec) started this process, with any number of ranks."""
    return any(v in os.environ for v in SIZE_VARIABLES)


def ranks_from_launcher() -> int:
    """The ranks the launcher started (1 outside one)."""
    for v in SIZE_VARIABLES:
        try:
            return int(os.environ[v])
        except (KeyError, ValueError):
            continue
    return 1


def one_thread_per_rank() -> None:
    if ranks_from_launcher() > 1:
        for v in THREAD_VARIABLES:
            os.environ.setdefault(v, "1")
