"""Planning a run: from what a user asks (a corpus, a config file and ``--set`` overrides, a time
budget, a model to start from, a run to continue) to the ``Trainer`` that will train it. The
command line calls ``plan``; so can a notebook, and get what ``charlm train`` would train.

Precedence, as everywhere in charlm: the defaults, then what a recipe chose (recipes.py: for
``minutes``, or for ``source``), then the config file, then the overrides. The recipes are sized
with the user's own data.val_fraction, read before anything is timed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import load_config
from ..network.blas import core
from ..predict.checkpoint import BUNDLED_NAME, checkpoint_path, load_checkpoint
from ..system import available_memory
from ..text.audit import audit
from ..text.corpus import load_corpus
from ..text.sources import CorpusSource
from . import finetune
from .recipes import Choice, choose, finetune_recipe
from .rundir import LAST, default_dir
from .trainer import Trainer


@dataclass
class Plan:
    """A run ready to train, and what a recipe chose for it (None without one)."""

    trainer: Trainer
    choice: Choice | None = None
    source: str | None = None  # the --from source's path, as the checkpoint names it


def plan(corpus: CorpusSource, config_path=None, overrides=(), *, minutes: float | None = None,
         source: str | None = None, resume: str | None = None, out_dir=None, overwrite: bool = False,
         allow_new_corpus: bool = False, reporter=None, workers=None,
         say: Callable[[str], None] = lambda line: None) -> Plan:
    """The run ``charlm train`` makes of these options (``resume`` may be "auto": the run in the
    output directory, if there is one). ``say`` hears what takes time before it starts (timing
    candidates)."""
    overrides = list(overrides)
    if resume == "auto":  # the same command line starts the run, and continues it after a crash
        last = Path(out_dir or default_dir(load_config(config_path, overrides).name)) / LAST
        resume = str(last) if last.is_file() else None
    if source:
        return _finetuning(corpus, source, minutes, config_path, overrides, out_dir, reporter, overwrite, workers, say)
    if minutes is not None:
        return _budgeted(corpus, minutes, config_path, overrides, out_dir, reporter, overwrite, workers, say)
    if resume:
        ck = load_checkpoint(checkpoint_path(resume, resume=True))
        cfg = load_config(config_path, overrides, base=ck.config)
        return Plan(Trainer.resume(ck, corpus, cfg, out_dir, reporter, allow_new_corpus=allow_new_corpus,
                                   workers=workers))
    cfg = load_config(config_path, overrides)
    return Plan(Trainer(cfg, corpus, out_dir, reporter, overwrite=overwrite, workers=workers))


def describe_run(tr: Trainer) -> dict:
    """What a run would do, without training (``charlm train --dry-run``; the ``--json`` schema
    in docs/commands.md): its config, corpus and vocabulary, parameters, steps, memory, and its
    step timed by every worker together (so every rank calls this)."""
    seconds = tr.seconds_per_step()
    counts = tr.model.param_counts()
    per_epoch = tr.batches.num_windows
    return {
        "config": tr.config.to_dict(), "corpus": tr.corpus.fingerprint,
        "train_chars": tr.train_chars, "val_chars": len(tr.val_ids),
        "vocabulary": [c.to_dict() for c in audit(tr.corpus)],
        "parameters": sum(n for _, n in counts), "parameters_by_group": dict(counts),
        "steps_per_epoch": per_epoch, "total_steps": tr.budget.total_steps,
        "workers": tr.workers.size, "memory_bytes": tr.memory.total * tr.workers.local_size,
        "memory_bytes_per_worker": tr.memory.total, "memory_parts": tr.memory.parts,
        "memory_available_bytes": available_memory(),
        "seconds_per_step": seconds, "seconds_per_epoch": seconds * per_epoch, "output_dir": str(tr.out_dir),
        "blas_core": core(),
    }


def _val_fraction(config_path, overrides) -> float:
    """The validation share the user's own config sets (the recipes size passes with it)."""
    return load_config(config_path, overrides).data.val_fraction


def _corpus(corpus, workers):
    return workers.root_first(lambda: load_corpus(corpus)) if workers is not None else load_corpus(corpus)


def _budgeted(corpus, minutes, config_path, overrides, out_dir, reporter, overwrite, workers, say) -> Plan:
    val_fraction = _val_fraction(config_path, overrides)
    loaded = _corpus(corpus, workers)
    say(f"timing the candidate models for a {minutes:g}-minute budget...")
    choice = choose(loaded, minutes, val_fraction=val_fraction, workers=workers)
    cfg = load_config(config_path, overrides, under=choice.config, name=f"{minutes:g}min")
    return Plan(Trainer(cfg, loaded, out_dir, reporter, overwrite=overwrite, workers=workers), choice)


def _finetuning(corpus, source, minutes, config_path, overrides, out_dir, reporter, overwrite, workers, say) -> Plan:
    ck = finetune.open_source(source)
    val_fraction = _val_fraction(config_path, overrides)
    loaded = _corpus(corpus, workers)
    if minutes is not None:
        say(f"timing the source model for a {minutes:g}-minute budget...")
    choice = finetune_recipe(ck.config, loaded, minutes, val_fraction=val_fraction, workers=workers)
    label = BUNDLED_NAME if source == BUNDLED_NAME else Path(source).stem if Path(source).is_file() else Path(source).name
    cfg = load_config(config_path, overrides, under=choice.config, name=f"{_stem(corpus)}-from-{label}")
    finetune.check_same_size(cfg, ck)
    grown = finetune.encode_for(ck, loaded)
    trainer = Trainer(cfg, grown, out_dir, reporter, overwrite=overwrite, start=finetune.start(ck, grown, cfg),
                      workers=workers)
    return Plan(trainer, choice, ck.meta["path"])


def _stem(source: CorpusSource) -> str:
    """A run's name for the corpus: the first path's file name without its suffix."""
    p = Path(source.paths[0]).resolve()
    return p.stem if p.is_file() else p.name
