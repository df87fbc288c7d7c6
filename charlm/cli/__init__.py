"""The ``charlm`` command: a thin shell over the library. The group and what every command
shares are in base.py; each command lives in a module of its own, which registers it on the
group when imported here: cmd_train (train), cmd_sample (sample), cmd_score (score),
cmd_info (info, export, keys), cmd_baseline (baseline), cmd_report (plot, report), cmd_cache
(cache), cmd_serve (serve).
"""

from . import cmd_baseline, cmd_cache, cmd_info, cmd_report, cmd_sample, cmd_score, cmd_serve, cmd_train  # noqa: F401  (register)
from .base import main

__all__ = ["main"]
