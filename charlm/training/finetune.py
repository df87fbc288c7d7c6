"""Fine-tuning: a new run whose weights start from a trained model's (``charlm train CORPUS
--from SOURCE``). The source file is only read.

The new model has the source's size and cell; dropout and the n-gram mixture may change. Its
vocabulary is the source's, in the source's order, with the corpus's new characters appended
(``Vocab.extended``); characters the corpus lacks stay, so the model still scores them. A new
character needs a column of the first layer's input weights and a row of the head:

- its input column is the mean of the source's columns (an average character: the first
  layer sees an input of the usual scale instead of nothing);
- its head row is zero and its bias is set so that its probability starts at its frequency
  in the training split: b = ln f - ln(1 - F) + mean lse, with F the new characters' total
  frequency and lse the log-sum-exp of the source's logits over a sample of the corpus.
  A zero or random row instead starts every new character near exp(0 - lse), about 1/V of
  a typical character's mass whatever its frequency (docs/own-text.md has the comparison).

Shape letters: V the grown vocabulary, V0 the source's, H hidden, G gates x H.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import Config
from ..errors import ConfigError
from ..network.model import Model
from ..predict.checkpoint import BUNDLED, BUNDLED_NAME, Checkpoint, load_checkpoint
from ..text.corpus import Corpus, split

# What a fine-tuned model cannot change: the shapes of its weights depend on them.
FIXED_MODEL_KEYS = ("type", "hidden_size", "num_layers", "activation", "dtype")
SAMPLE_CHARS = 20_000  # characters of the corpus run through the source to place the new biases


@dataclass
class Start:
    """A fine-tuned run's first weights (name -> array, for the grown vocabulary) and lineage."""

    params: dict[str, np.ndarray]
    lineage: dict


def open_source(source: str) -> Checkpoint:
    """``bundled`` (the model that ships with charlm), a checkpoint file or a run directory."""
    return load_checkpoint(source, with_training_state=False)


def check_same_size(config: Config, ck: Checkpoint) -> None:
    """A ``ConfigError`` naming the first size key that differs from the source's."""
    for key in FIXED_MODEL_KEYS:
        new, old = getattr(config.model, key), getattr(ck.config.model, key)
        if new != old:
            raise ConfigError(f"model.{key} is {new!r} but the source model's is {old!r}: a fine-tuned model keeps "
                              f"its source's {', '.join(FIXED_MODEL_KEYS)} (dropout and ngram_order may change)")


def encode_for(ck: Checkpoint, corpus: Corpus) -> Corpus:
    """``corpus`` re-encoded in the source's vocabulary extended by the corpus's new characters."""
    vocab = ck.vocab.extended(corpus.vocab.chars)
    remap = vocab.ids_of_code_points(np.array([ord(c) for c in corpus.vocab.chars], dtype=np.int64))
    counts = None
    if corpus.counts is not None:
        counts = np.zeros(len(vocab), np.int64)
        counts[remap] = corpus.counts
    # In the new vocabulary's dtype from the start: one copy of the corpus, not an int64 one.
    return Corpus(ids=remap.astype(vocab.dtype)[corpus.ids], vocab=vocab, fingerprint=corpus.fingerprint,
                  summary=corpus.summary, counts=counts)


def start(ck: Checkpoint, corpus: Corpus, config: Config) -> Start:
    """The source's weights grown to ``corpus.vocab`` (from ``encode_for``), and the lineage."""
    V0, V = len(ck.vocab), len(corpus.vocab)
    params = {name: a.copy() for name, a in ck.params.items()}
    if V > V0:
        Wx = params["l0/Wx"]  # (G, V0): one column per input character
        params["l0/Wx"] = np.concatenate([Wx, np.repeat(Wx.mean(axis=1, keepdims=True), V - V0, axis=1)], axis=1)
        H = params["head/W"].shape[1]
        params["head/W"] = np.concatenate([params["head/W"], np.zeros((V - V0, H), Wx.dtype)])
        params["head/b"] = np.concatenate([params["head/b"], _new_biases(params, corpus, config, V0)])
    return Start(params, _lineage(ck, corpus.vocab.chars[V0:]))


def _new_biases(params: dict, corpus: Corpus, config: Config, V0: int) -> np.ndarray:
    """(V - V0,) head biases that start each new character at its training-split frequency."""
    train, _ = split(corpus.ids, config.data.val_fraction)
    V = len(corpus.vocab)
    freq = (np.bincount(train, minlength=V)[V0:] + 1.0) / (len(train) + V)  # add-one: a character only in val
    model = Model(config.model, V)
    for name, a in params.items():
        model.params[name][...] = a if name != "head/b" else np.concatenate([a, np.zeros(V - V0, a.dtype)])
    ids = train[:SAMPLE_CHARS].astype(np.int64)
    with model.inference():
        logits, _ = model.forward(ids[:, None], model.zero_state(1))  # (V, N)
    old = logits[:V0].astype(np.float64)
    top = old.max(axis=0)
    lse = top + np.log(np.exp(old - top).sum(axis=0))
    return (np.log(freq) - np.log1p(-freq.sum()) + lse.mean()).astype(params["head/b"].dtype)


def _lineage(ck: Checkpoint, added: tuple[str, ...]) -> dict:
    path = Path(ck.meta["path"])
    m = ck.meta
    return {"source": BUNDLED_NAME if path.resolve() == BUNDLED.resolve() else str(path),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "step": m.get("step"),
            "best_val": m.get("best_val"), "corpus": m.get("corpus"), "added_chars": "".join(added),
            "parent": m.get("lineage")}


def describe_lineage(lineage: dict | None) -> str | None:
    """'fine-tuned from bundled (sha256 1a2b3c4d5e6f, step 5,400; 16 characters added), which was
    fine-tuned from ...' for info and the report."""
    parts = []
    while isinstance(lineage, dict):
        step = lineage.get("step")
        added = lineage.get("added_chars") or ""
        parts.append(f"{lineage.get('source')} (sha256 {str(lineage.get('sha256'))[:12]}"
                     + (f", step {step:,}" if isinstance(step, int) else "")
                     + (f"; {len(added)} characters added" if added else "") + ")")
        lineage = lineage.get("parent")
    return "fine-tuned from " + ", which was fine-tuned from ".join(parts) if parts else None
