"""What a user can get wrong, as one exception family.

The CLI turns every ``CharlmError`` into one line on stderr and a non-zero exit; the library
raises them and never prints.
"""


class CharlmError(Exception):
    """A problem with the user's input (file, config, checkpoint, text), not a bug in charlm."""

    exit_code = 1


class ConfigError(CharlmError):
    """A config file or ``--set`` override is invalid."""


class CorpusError(CharlmError):
    """A training corpus cannot be used."""


class CheckpointError(CharlmError):
    """A checkpoint cannot be read, or was not written by charlm."""


class VocabError(CharlmError):
    """Text contains characters the model's vocabulary does not have."""


class TrainingError(CharlmError):
    """Training cannot go on (non-finite loss, output directory in use, disk full)."""
