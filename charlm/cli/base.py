"""What every command shares: the ``charlm`` group, its one error handler, option helpers,
and the model a command uses when it is given no checkpoint.

Every ``CharlmError`` (and an OS error such as a full disk) becomes one line on stderr and
exit status 1, in exactly one place: ``CharlmGroup.invoke``. A reader that closes the pipe
early (``charlm sample | head``) ends charlm quietly with status 0.
"""

from __future__ import annotations

import json
import math
import os
import sys
import traceback

import click

from .. import __version__
from ..errors import CharlmError, echo
from ..predict.adapt import AdaptOptions
from ..predict.checkpoint import BEST, BUNDLED, BUNDLED_NAME, LAST, load_checkpoint
from ..threads import under_launcher
from ..training import parallel

MAX_MESSAGE = 400  # characters of an error line


def option(*args, **kwargs):
    """click.option that shows its default in --help."""
    kwargs.setdefault("show_default", True)
    return click.option(*args, **kwargs)


def dumps(obj) -> str:
    """Strict JSON (no NaN or Infinity), one line, valid UTF-8: characters as they are, unless a
    string holds a lone surrogate (a file name that is not UTF-8), when every non-ASCII character
    is escaped."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj, ensure_ascii=True, allow_nan=False)
    return text


class Finite(click.FloatRange):
    """A float in [lo, hi] (either end excluded when open), its range shown in --help as
    click.FloatRange shows it; NaN and infinities are refused, which click.FloatRange lets NaN
    through."""

    def __init__(self, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False):
        whole = [int(v) if float(v).is_integer() else v for v in (lo, hi)]  # --help shows 0<x<=1, not 0.0<x<=1.0
        super().__init__(*whole, min_open=lo_open, max_open=hi_open)

    def convert(self, value, param, ctx):
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"{echo(value)} is not a number", param, ctx)
        lo_ok = v > self.min if self.min_open else v >= self.min
        hi_ok = v < self.max if self.max_open else v <= self.max
        if not (math.isfinite(v) and lo_ok and hi_ok):
            self.fail(f"{echo(value)} is not in the range {self._describe_range()}", param, ctx)
        return v


class CharlmGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            _quiet_broken_pipe()
        except CharlmError as e:
            _fail(e.render(_flag), e)
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            _fail(f"{where}{e.strerror or e}", e)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # click's own: a usage error or an exit, which click reports
        except (Exception, KeyboardInterrupt) as e:
            w = _workers()
            if w is None or w.size == 1:
                if isinstance(e, KeyboardInterrupt):
                    # The shell's 128 + SIGINT, as a stopped training run gives, not click's 1.
                    raise click.exceptions.Exit(130) from None
                raise
            if type(e).__module__.startswith("mpi4py"):
                # A peer died mid-collective: the launcher says which; this rank ends quietly.
                os._exit(1)
            # A bug, an exhausted resource, a second Ctrl-C, or a stop before training began:
            # the others would wait for this rank forever. An interrupt needs no report (MPI's
            # own line about the abort included).
            if isinstance(e, KeyboardInterrupt):
                _quiet_stderr()
            else:
                traceback.print_exc()
            sys.stderr.flush()
            w.abort(130 if isinstance(e, KeyboardInterrupt) else 1)


# The library's errors name its parameters (errors.CharlmError); only the CLI knows their flags.
FLAGS = {"resume": "--resume", "out_dir": "--out", "overwrite": "--overwrite", "allow_new_corpus": "--allow-new-corpus",
         "unknown": "--unknown"}


def _flag(name: str, value) -> str:
    flag = FLAGS[name]
    return flag if value is None or value is True else f"{flag} {value}"


def _workers():
    """This process's rank in an MPI job, or None outside one."""
    try:
        return parallel.current() if under_launcher() else None
    except CharlmError:
        return None


def _fail(message: str, error: BaseException | None = None):
    w = _workers()
    if w is not None and w.size > 1:
        if getattr(error, "quiet", False):  # rank 0 says why
            sys.exit(1)
        if w.rank:
            message = f"worker {w.rank}: {message}"
    line = " ".join(message.split())  # one line, whatever the message held
    if len(line) > MAX_MESSAGE:
        line = line[: MAX_MESSAGE - 3] + "..."
    raise click.ClickException(line) from None


def _quiet_stderr():
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stderr.fileno())
    except (OSError, ValueError):
        pass


def _quiet_broken_pipe():
    """The reader is gone: point stdout at /dev/null so the interpreter's final flush cannot
    fail again, and exit 0 as Unix tools do."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(0)


@click.group(cls=CharlmGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="charlm")
def main():
    """Train character-level RNN, LSTM and GRU language models in NumPy; sample and score text."""


CHECKPOINT_HELP = (f"A .npz checkpoint, or a run directory (then its {BEST}, else its {LAST}); without it, or with "
                   f"'{BUNDLED_NAME}', the tiny-Shakespeare model that ships with charlm.")


def open_model(checkpoint):
    """The checkpoint asked for, or the bundled model (saying so on stderr)."""
    if checkpoint is None:
        if not BUNDLED.is_file():
            raise CharlmError(f"{BUNDLED}: the bundled model is missing from this installation; give --checkpoint")
        ck = load_checkpoint(BUNDLED, with_training_state=False)
        best = ck.meta.get("best_val")
        click.echo(f"model: the bundled tiny-Shakespeare {ck.config.model.type.upper()} "
                   f"{ck.config.model.num_layers}x{ck.config.model.hidden_size}"
                   + (f" (validation {best:.3f} nats/char)" if isinstance(best, float) else "")
                   + "; --checkpoint chooses another", err=True)
        return ck
    return load_checkpoint(checkpoint, with_training_state=False)


def network_only_option(command):
    """--network-only, on sample, score and serve: the network without its n-gram."""
    return option("--network-only", is_flag=True,
                  help="Use the checkpoint's network alone, without the n-gram it is mixed with (what charlm export "
                       "writes to ONNX and to a page); the same as without it for a model with no mixture.")(command)


def predictor(ck, network_only: bool):
    """What a command samples or scores with: the checkpoint's predictor, or its network alone."""
    return ck.build_model() if network_only else ck.build_predictor()


def adapt_options(command):
    """--adapt and its three settings, on every command that scores text."""
    d = AdaptOptions()
    opts = [
        option("--adapt", is_flag=True,
               help="Dynamic evaluation (Krause et al. 2017): the model keeps learning from the text as it scores "
                    "it, a segment at a time, each segment scored before it is learned from; shows static and "
                    "adapted bits per character. The weights on disk never change."),
        option("--adapt-segment", type=click.IntRange(1, 10_000), default=d.segment,
               help="--adapt: characters scored between two learning steps."),
        option("--adapt-lr", type=Finite(0.0, 1.0, lo_open=True), default=d.lr,
               help="--adapt: step size of each weight, scaled by the root mean square of its gradients so far."),
        option("--adapt-decay", type=Finite(0.0, 1.0), default=d.decay,
               help="--adapt: how far each step pulls the weights back towards the trained ones (0: not at all)."),
    ]
    for opt in reversed(opts):
        command = opt(command)
    return command


def adapting(adapt: bool, adapt_segment: int, adapt_lr: float, adapt_decay: float) -> AdaptOptions | None:
    """The options of ``adapt_options`` as the library takes them: None without --adapt."""
    options = AdaptOptions(adapt_segment, adapt_lr, adapt_decay)
    if not adapt:
        if options != AdaptOptions():
            raise click.UsageError("--adapt-segment, --adapt-lr and --adapt-decay set --adapt's learning: give --adapt")
        return None
    return options
