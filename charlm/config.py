"""Configuration: plain dataclasses that flow one way, YAML -> validated ``Config`` -> trainer.

Every key has a default, so a config file may be partial. Each field carries its rule
(choices or range) in its metadata; ``Config.from_dict`` checks them all and names the key,
the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, echo

MAX_CONFIG_BYTES = 1 << 20  # a real config is a few hundred bytes
MAX_OVERRIDE_CHARS = 1000
MAX_NGRAM_ORDER = 8  # the longest n-gram: of a mixture (model.ngram_order), and of charlm baseline
MAX_TEMPERATURE = 100  # the hottest sampling anywhere: sample, serve, and the samples train prints


def rule(section: type, key: str) -> dict:
    """The rule of one config key (``rule(DataConfig, "val_fraction")["hi"]``), for an option
    that takes the same value outside a config."""
    return next(f.metadata for f in dataclasses.fields(section) if f.name == key)


def _opt(default, help, *, choices=None, lo=None, hi=None, lo_open=False, hi_open=False, optional=False,
         refused=None):
    """A config field with its rule; ``refused`` maps a value people try to why it cannot work."""
    return field(
        default=default,
        metadata=dict(help=help, choices=choices, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, optional=optional,
                      refused=refused or {}),
    )


@dataclass
class ModelConfig:
    type: str = _opt("lstm", "cell type", choices=("rnn", "lstm", "gru"))
    hidden_size: int = _opt(128, "units per layer", lo=1, hi=65536)
    num_layers: int = _opt(2, "stacked recurrent layers", lo=1, hi=64)
    dropout: float = _opt(0.0, "inverted dropout on the outputs of every layer but the last", lo=0.0, hi=1.0, hi_open=True)
    variational_dropout: float = _opt(0.0, "variational (locked) dropout, instead of dropout: one mask per stream "
                                      "for the whole window, the same at every step, on every layer's output (the head's "
                                      "input too) and on the recurrent state h_{t-1} that enters Wh h_{t-1} (Gal & "
                                      "Ghahramani 2016)", lo=0.0, hi=1.0, hi_open=True)
    activation: str = _opt("tanh", "activation of the vanilla rnn", choices=("tanh", "relu"))
    init: str = _opt(
        "xavier",
        "weight init: xavier (Glorot-uniform input weights, orthogonal recurrent weights), "
        "he (Kaiming-normal N(0, 2/fan_in), for the relu rnn), "
        "uniform (U(-1/sqrt(H), 1/sqrt(H)) everywhere, as PyTorch)",
        choices=("xavier", "he", "uniform"),
        refused={"zeros": "every unit of a layer would get the same gradient and stay identical forever "
                          "(the symmetry never breaks), so the model cannot learn"},
    )
    forget_bias: float = _opt(1.0, "initial LSTM forget-gate bias", lo=-100.0, hi=100.0)
    dtype: str = _opt("float32", "float type of weights and activations", choices=("float32", "float64"))
    ngram_order: int = _opt(0, "order of a Kneser-Ney n-gram model of the training split mixed with the network "
                            "(0: none); the mixture's weight is fitted on the validation split at every evaluation, "
                            "and sample and score use the mixture", lo=0, hi=MAX_NGRAM_ORDER)


@dataclass
class DataConfig:
    val_fraction: float = _opt(0.1, "last fraction of the corpus held out for validation", lo=0.0, hi=1.0, hi_open=True)
    batch_size: int = _opt(50, "parallel streams per step (B)", lo=1, hi=1 << 20)
    seq_length: int = _opt(50, "characters per stream per step, the BPTT window (T)", lo=1, hi=1 << 20)


@dataclass
class TrainConfig:
    optimizer: str = _opt("adam", "update rule", choices=("adam", "sgd", "adagrad", "rmsprop"))
    lr: float = _opt(2e-3, "learning rate", lo=0.0, lo_open=True, hi=100.0)
    momentum: float = _opt(0.9, "sgd momentum", lo=0.0, hi=1.0, hi_open=True)
    beta1: float = _opt(0.9, "adam beta1", lo=0.0, hi=1.0, hi_open=True)
    beta2: float = _opt(0.999, "adam beta2", lo=0.0, hi=1.0, hi_open=True)
    alpha: float = _opt(0.99, "rmsprop smoothing constant", lo=0.0, hi=1.0, hi_open=True)
    weight_decay: float = _opt(0.0, "adam: decoupled weight decay (AdamW): every step shrinks the weights by "
                               "lr * weight_decay of themselves (0: off)", lo=0.0, hi=10.0)
    eps: float = _opt(1e-8, "adam/adagrad/rmsprop epsilon", lo=0.0, lo_open=True, hi=1.0)
    grad_clip: float = _opt(5.0, "global gradient-norm clip (0: off)", lo=0.0)
    lr_schedule: str = _opt("constant", "learning-rate schedule: constant; step (lr_decay every lr_decay_every epochs); "
                            "cosine or linear (a warm-up, then down to min_lr by the end of whichever budget ends "
                            "the run first, max_steps/epochs or max_minutes)",
                            choices=("constant", "step", "cosine", "linear"))
    lr_decay: float = _opt(0.97, "step schedule: factor applied every lr_decay_every epochs", lo=0.0, lo_open=True, hi=1.0)
    lr_decay_every: int = _opt(1, "step schedule: epochs between decays", lo=1)
    warmup_steps: int = _opt(0, "cosine and linear schedules: steps of linear warm-up", lo=0)
    min_lr: float = _opt(0.0, "cosine and linear schedules: final learning rate", lo=0.0)
    cooldown: float = _opt(1.0, "cosine and linear schedules: the last share of the run over which the learning "
                           "rate falls to min_lr; before it, it holds at lr (1: it falls from the end of the "
                           "warm-up; 0.2: warmup-stable-decay)", lo=0.0, lo_open=True, hi=1.0)
    max_steps: int | None = _opt(None, "stop after this many steps", lo=1, optional=True)
    epochs: float | None = _opt(10, "stop after this many passes over the training split", lo=0.0, lo_open=True, optional=True)
    max_minutes: float | None = _opt(None, "stop after this much wall-clock training time", lo=0.0, lo_open=True, optional=True)
    eval_every: int = _opt(500, "steps between validation passes", lo=1)
    eval_chars: int | None = _opt(250_000, "characters of the validation split that each evaluation scores: the "
                                  "same evenly spaced stretches every time, so curves compare, and a cost that does "
                                  "not grow with the corpus (null: all of it; train --full-eval scores all of it once "
                                  "at the end)", lo=1000, optional=True)
    patience: int | None = _opt(None, "early stopping: stop after this many evaluations without an improvement "
                                "of at least min_delta in the network's validation loss (null: off)", lo=1,
                                optional=True)
    min_delta: float = _opt(0.0, "early stopping: the smallest drop in validation loss (nats/char) that counts "
                            "as an improvement", lo=0.0)
    checkpoint_every: int = _opt(500, "steps between writes of last.npz", lo=1)
    sample_length: int = _opt(100, "characters sampled at each evaluation, printed and kept in samples.jsonl (0: none)",
                              lo=0, hi=10000)
    sample_temperature: float = _opt(0.8, "temperature of those samples (their seed is train.seed, so runs compare)",
                                     lo=0.0, lo_open=True, hi=MAX_TEMPERATURE)
    seed: int = _opt(1234, "seed for init, dropout and everything random", lo=0, hi=2**63 - 1)


SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}

# Keys charlm had and dropped because no measurement defended them (docs/performance.md, "Tried
# and not kept"): key -> (its default then, why it went). A config or a checkpoint written
# before still loads with the key at that default, which is what charlm does now; any other
# value asks for something charlm no longer does, and is a ConfigError naming the key.
REMOVED = {
    "train.bias_lr": (1.0, "it scaled the recurrent layers' bias steps, and 2 (PyTorch's update) trained no "
                           "better than 1 beyond the spread of runs"),
    "model.zoneout_cell": (0.0, "zoneout trained worse than the recipe on the small corpora it was meant for"),
    "model.zoneout_hidden": (0.0, "zoneout trained worse than the recipe on the small corpora it was meant for"),
    "train.ema": (0.0, "weight averaging scored no better than the trained weights on the small corpora"),
}


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str = "default"

    def to_dict(self) -> dict:
        """Plain nested dict of the three sections (the name is not part of the config)."""
        return {s: dataclasses.asdict(getattr(self, s)) for s in SECTIONS}

    @classmethod
    def from_dict(cls, d: Any, name: str = "default", where: str = "config") -> Config:
        if d is None:
            d = {}
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected a mapping with sections {', '.join(SECTIONS)}, got {type(d).__name__}")
        if len(d) > 2 * len(SECTIONS):  # refuse before walking something enormous
            raise ConfigError(f"{where}: {len(d)} top-level entries; a config has the sections {', '.join(SECTIONS)}")
        sections = {}
        for sname, sval in d.items():
            if sname not in SECTIONS:
                raise ConfigError(
                    f"{where}: unknown section {echo(sname)}{_suggest(sname, SECTIONS)}; sections are {', '.join(SECTIONS)}"
                )
            sections[sname] = _section(SECTIONS[sname], sname, sval, where)
        for sname, scls in SECTIONS.items():
            sections.setdefault(sname, scls())
        config = cls(name=name, **sections)
        _check_across_keys(config, where)
        return config

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


def _check_across_keys(c: Config, where: str) -> None:
    """Rules that involve more than one key."""
    t, m = c.train, c.model
    if m.variational_dropout and m.dropout:
        raise ConfigError(f"{where}: model.variational_dropout replaces model.dropout's per-step masks; set one of "
                          f"them, not both ({m.dropout} and {m.variational_dropout})")
    if t.weight_decay and t.optimizer != "adam":
        raise ConfigError(f"{where}: train.weight_decay is AdamW's decoupled decay; it needs train.optimizer adam, "
                          f"not {t.optimizer}")
    decays = t.lr_schedule in ("cosine", "linear")
    if decays and t.max_steps is None and t.epochs is None and t.max_minutes is None:
        raise ConfigError(f"{where}: train.lr_schedule {t.lr_schedule} needs train.max_steps, train.epochs or "
                          "train.max_minutes to know where it ends")
    if decays and t.min_lr > t.lr:
        raise ConfigError(f"{where}: train.min_lr {t.min_lr} is above train.lr {t.lr}; the {t.lr_schedule} schedule "
                          "decays to min_lr")
    if c.model.ngram_order and c.data.val_fraction == 0:
        raise ConfigError(f"{where}: model.ngram_order {c.model.ngram_order} needs a validation split to fit the "
                          "mixture's weight on: set data.val_fraction above 0")
    if t.max_steps is None and t.epochs is None and t.max_minutes is None and t.patience is None:
        raise ConfigError(f"{where}: no budget: set train.max_steps, train.epochs, train.max_minutes or train.patience")


def _suggest(word, options) -> str:
    if not isinstance(word, str) or len(word) > 100:
        return ""
    near = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {near[0]!r}?)" if near else ""


def _section(cls, sname: str, values: Any, where: str):
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: section {sname!r} must be a mapping of keys, got {echo(values)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if len(values) > 2 * len(fields):
        raise ConfigError(f"{where}: section {sname!r} has {len(values)} keys; it has only {len(fields)} ({', '.join(fields)})")
    kwargs = {}
    for key, value in values.items():
        if isinstance(key, str) and f"{sname}.{key}" in REMOVED:
            _removed(f"{sname}.{key}", value, where)
            continue
        if key not in fields:
            raise ConfigError(
                f"{where}: unknown key {sname}.{key if isinstance(key, str) and len(key) <= 40 else echo(key)}"
                f"{_suggest(key, fields)}; "
                f"{sname} keys are {', '.join(fields)}"
            )
        kwargs[key] = _check(f"{sname}.{key}", value, fields[key], where)
    return cls(**kwargs)


def _removed(key: str, value, where: str) -> None:
    """A key charlm dropped: accepted at its old default, a ConfigError at any other value."""
    old, why = REMOVED[key]
    if value == old and not isinstance(value, bool):
        return
    raise ConfigError(f"{where}: {key} was removed from charlm ({why}); only its old default {old!r} is accepted, "
                      f"not {echo(value)}")


def _type_name(f) -> str:
    return {"int": "an integer", "float": "a number", "str": "a string"}[_base_type(f)]


def _base_type(f) -> str:
    t = f.type if isinstance(f.type, str) else f.type.__name__
    return t.split("|")[0].strip()


def _check(key: str, value: Any, f, where: str):
    """Coerce and validate one value against its field's rule; ConfigError naming the key."""
    meta = f.metadata
    kind = _base_type(f)
    if value is None:
        if meta["optional"]:
            return None
        raise ConfigError(f"{where}: {key} must be {_type_name(f)}, not empty")
    if kind == "str":
        ok = isinstance(value, str)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
            ok = math.isfinite(value)
    if not ok:
        allowed = f"one of {', '.join(meta['choices'])}" if meta["choices"] else _type_name(f)
        raise ConfigError(f"{where}: {key} must be {allowed}, got {echo(value)}")
    if value in meta["refused"]:
        raise ConfigError(f"{where}: {key} {value!r} is refused: {meta['refused'][value]}; use one of {', '.join(meta['choices'])}")
    if meta["choices"] and value not in meta["choices"]:
        raise ConfigError(
            f"{where}: {key} is {echo(value)}{_suggest(value, meta['choices'])}; allowed: {', '.join(meta['choices'])}"
        )
    lo, hi = meta["lo"], meta["hi"]
    if lo is not None and (value < lo or (meta["lo_open"] and value == lo)) or hi is not None and (
        value > hi or (meta["hi_open"] and value == hi)
    ):
        lo_s = "" if lo is None else f"{'>' if meta['lo_open'] else '>='} {lo}"
        hi_s = "" if hi is None else f"{'<' if meta['hi_open'] else '<='} {hi}"
        raise ConfigError(f"{where}: {key} is {echo(value)}; it must be {' and '.join(s for s in (lo_s, hi_s) if s)}")
    return value


def parse_override(expr: str) -> tuple[str, str, Any]:
    """'section.key=value' -> (section, key, YAML-parsed value)."""
    if len(expr) > MAX_OVERRIDE_CHARS:
        raise ConfigError(f"override {echo(expr)} is {len(expr):,} characters; at most {MAX_OVERRIDE_CHARS:,}")
    if "=" not in expr:
        raise ConfigError(f"override {echo(expr)}: expected section.key=value, e.g. train.lr=0.001")
    path, raw = expr.split("=", 1)
    parts = path.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override {echo(expr)}: expected section.key=value, e.g. model.hidden_size=256")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except (yaml.YAMLError, RecursionError, ValueError):
        raise ConfigError(f"override {echo(expr)}: cannot parse the value {echo(raw)}") from None
    return parts[0], parts[1], value


def merge_overrides(d: dict, overrides: list[str]) -> dict:
    """Apply ``--set`` expressions to a raw config dict (validated afterwards as a whole)."""
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in (d or {}).items()}
    for expr in overrides:
        section, key, value = parse_override(expr)
        if section not in SECTIONS:
            raise ConfigError(f"override {echo(expr)}: unknown section {echo(section)}{_suggest(section, SECTIONS)}")
        if not isinstance(d.get(section), dict):
            d[section] = {}
        d[section][key] = value
    return d


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file with ``safe_load`` (tags that build Python objects are refused)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{p}: config file is {size:,} bytes; a charlm config is at most {MAX_CONFIG_BYTES:,}")
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read config: {e}") from None
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(f"{p}: YAML nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more than 4,300 digits
        raise ConfigError(f"{p}: YAML value cannot be read: {str(e)[:100]}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0][:200]
        raise ConfigError(f"{p}: YAML error{at}: {problem}") from None


def load_config(path: str | Path | None = None, overrides: list[str] = (), base: Config | None = None,
                under: dict | None = None, name: str | None = None) -> Config:
    """Defaults <- ``under`` (a raw config chosen for the user, e.g. by --minutes) <- YAML file
    (or ``base``, e.g. a checkpoint's config) <- ``--set`` overrides, validated once at the end."""
    if path:
        raw, name = read_yaml(path), Path(path).stem  # a file names the run, whatever else chose it
        if raw is not None and not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping with sections model, data, train")
    else:
        raw, name = (base.to_dict(), base.name) if base else ({}, name or "default")
    if under:
        raw = {s: {**(under.get(s) or {}), **((raw or {}).get(s) or {})} for s in {*under, *(raw or {})}}
    return Config.from_dict(merge_overrides(raw or {}, list(overrides)), name=name, where=str(path or "config"))
