"""What a user can get wrong, as one exception family, and how a user's value is echoed.

The CLI turns every ``CharlmError`` into one line on stderr and a non-zero exit; the library
raises them and never prints.
"""

from __future__ import annotations

import reprlib


class CharlmError(Exception):
    """A problem with the user's input (file, config, checkpoint, text), not a bug in charlm.

    A message that tells the user which parameter to use names it as a ``{field}`` and gives
    its value as a keyword (None: the parameter alone, True: a switch). ``render(spell)``
    writes each the way the caller's interface spells it: str() as the library's keyword
    (``resume='runs/x'``), the CLI as its flag (``--resume runs/x``). So rewording a message
    never loses the flag, and the CLI needs no knowledge of the wording.
    """

    def __init__(self, message: str, **params):
        self.message, self.params = message, params
        super().__init__(self.render())

    def render(self, spell=None) -> str:
        spell, message = spell or _keyword, self.message
        for name, value in self.params.items():  # not str.format: the rest may quote a user's braces
            message = message.replace("{" + name + "}", spell(name, value))
        return message


def _keyword(name: str, value) -> str:
    return name if value is None else f"{name}={value!r}"


class ConfigError(CharlmError):
    """A config file or ``--set`` override is invalid."""


class CorpusError(CharlmError):
    """A training corpus cannot be used."""


class CheckpointError(CharlmError):
    """A checkpoint cannot be read, or was not written by charlm."""


class VocabError(CharlmError):
    """Text contains characters the model's vocabulary does not have."""


class NotFiniteError(CharlmError):
    """A network's values overflowed on some input (a relu RNN's hidden state can grow without
    bound): there is no probability to report."""


class TrainingError(CharlmError):
    """Training cannot go on (non-finite loss, output directory in use, disk full, memory)."""


class RunExistsError(TrainingError):
    """A new run was asked for in a directory that already holds one."""


# A user's value in an error message: a bounded prefix of its repr. reprlib stops at a few
# items per level and a few levels, so even a YAML "billion laughs" structure (aliases that
# nest a small list a billion times over) is described in microseconds and a few bytes.
_short = reprlib.Repr()
_short.maxlevel, _short.maxlist, _short.maxdict, _short.maxtuple, _short.maxset = 2, 4, 4, 4, 4
_short.maxstring, _short.maxother, _short.maxlong = 40, 40, 40
ECHO_CHARS = 60


def echo(value) -> str:
    """repr(value), at most ~60 characters, safe on any size or shape of value."""
    if isinstance(value, int) and value.bit_length() > 128:  # repr of a 5,000-digit int raises
        return f"<an integer of {value.bit_length():,} bits>"
    s = _short.repr(value)
    return s if len(s) <= ECHO_CHARS else s[: ECHO_CHARS - 3] + "..."
