"""Checkpoints: one ``.npz`` archive, written atomically, read without pickle.

Keys read like a table of contents:

    meta_json              uint8 UTF-8 JSON: format, version, vocabulary, config, progress, RNG
    param/l0/Wx ...        model parameters
    optim/m/l0/Wx ...      optimizer state, slot/parameter
    state/l0/h ...         the hidden state carried into the next training window
    ngram/ids              the training split the n-gram of a mixture is counted on (model.ngram_order > 0)

Loading checks every array's header (dtype, shape, size against the file) before it
allocates, so a crafted or damaged file gives a ``CheckpointError``, never a huge allocation,
an unpickled object or a traceback.
"""

from __future__ import annotations

import json
import math
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import Config
from ..errors import CharlmError, CheckpointError, echo
from ..files import atomic_write
from ..network.cells import CELLS
from ..network.model import Model, param_shapes
from ..network.optim import OPTIMIZERS
from ..text.vocab import Vocab
from .mixture import Mixture
from .ngram import KneserNey

FORMAT = "charlm-checkpoint"
LAST, BEST = "last.npz", "best.npz"  # a run directory's checkpoints: the latest (resumable), the best
BUNDLED = Path(__file__).parents[1] / "models" / "tiny-shakespeare.npz"  # the model that ships with charlm
BUNDLED_NAME = "bundled"  # what every command, the server and a lineage call BUNDLED
FORMAT_VERSION = 1
MAX_META_BYTES = 64 << 20


@dataclass
class Checkpoint:
    """What a checkpoint holds. ``meta`` is the JSON metadata (step, epoch, rng, ...)."""

    config: Config
    vocab: Vocab
    params: dict[str, np.ndarray]
    meta: dict
    optim: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    state: list[tuple[np.ndarray, ...]] | None = None
    ngram_ids: np.ndarray | None = None  # (N,) ids of the n-gram's text, for a mixture

    def build_model(self) -> Model:
        """The network alone."""
        return self.load_params(Model(self.config.model, len(self.vocab)))

    def build_predictor(self) -> Model | Mixture:
        """What sample and score use: the network, mixed with its n-gram once a weight was fitted."""
        model, w = self.build_model(), self.meta.get("mix_weight")
        if self.ngram_ids is None or w is None:
            return model
        return Mixture(model, KneserNey(self.ngram_ids, self.config.model.ngram_order, len(self.vocab)), float(w))

    def load_params(self, model: Model) -> Model:
        """Copy the saved weights into ``model`` (built from this checkpoint's config)."""
        for name, a in self.params.items():
            model.params[name][...] = a
        return model


def save_checkpoint(path, model: Model, vocab: Vocab, config: Config, meta: dict,
                    optimizer=None, state=None, ngram_ids: np.ndarray | None = None) -> None:
    """Write atomically (``files.atomic_write``): a crash leaves the old file or the new one."""
    path = Path(path)
    full_meta = {"format": FORMAT, "version": FORMAT_VERSION, "vocab": list(vocab.chars),
                 "config": config.to_dict(), "config_name": config.name, **meta}
    if optimizer is not None:
        full_meta["optimizer_t"] = optimizer.t
    if ngram_ids is not None:
        full_meta["ngram_chars"] = len(ngram_ids)
    arrays = {"meta_json": np.frombuffer(json.dumps(full_meta).encode("utf-8"), dtype=np.uint8)}
    for name, p in model.params.items():
        arrays[f"param/{name}"] = p
    if optimizer is not None:
        for slot, flat in optimizer.state.items():
            for name, sl in model.slices.items():
                arrays[f"optim/{slot}/{name}"] = flat[sl].reshape(model.params[name].shape)
    if state is not None:
        for l, (layer, tensors) in enumerate(zip(model.layers, state)):
            for sname, a in zip(layer.state_names, tensors):
                arrays[f"state/l{l}/{sname}"] = a
    if ngram_ids is not None:
        arrays["ngram/ids"] = np.asarray(ngram_ids, dtype=vocab.dtype)
    atomic_write(path, lambda f: np.savez(f, **arrays))


SUMMARY_KEYS = ("step", "epoch", "elapsed_s", "best_val", "last_val", "train_chars", "corpus", "mix_weight", "net_val",
                "lineage")


def checkpoint_path(path, resume: bool = False) -> Path:
    """The checkpoint ``path`` names: ``bundled`` (the model that ships with charlm), a
    checkpoint file, or a run directory's best.npz (else its last.npz) to use a model, or its
    last.npz to resume the run."""
    if str(path) == BUNDLED_NAME:
        return BUNDLED
    p = Path(path)
    if p.is_dir():
        for name in (LAST,) if resume else (BEST, LAST):
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"{p}: run directory has no {f'{LAST} to resume' if resume else f'{BEST} or {LAST}'}")
    if not p.exists():
        raise CheckpointError(f"{p}: checkpoint not found")
    return p


def export_weights(ck: Checkpoint, path) -> None:
    """Write the model alone (weights, vocabulary, config, a summary of its training): for
    sampling, scoring and sharing; a third of a training checkpoint's size, and not resumable."""
    meta = {k: ck.meta[k] for k in SUMMARY_KEYS if k in ck.meta}
    save_checkpoint(path, ck.build_model(), ck.vocab, ck.config, meta, ngram_ids=ck.ngram_ids)


def describe(ck: Checkpoint) -> dict:
    """What ``charlm info`` shows: the model, its vocabulary, its training, its file."""
    m = ck.meta
    shapes = {name: list(a.shape) for name, a in ck.params.items()}
    counts = {name: int(a.size) for name, a in ck.params.items()}
    return {
        "path": m.get("path"), "format": m.get("format"), "format_version": m.get("version"),
        "type": ck.config.model.type, "layers": ck.config.model.num_layers, "hidden_size": ck.config.model.hidden_size,
        "parameters": sum(counts.values()), "tensors": {n: {"shape": shapes[n], "count": counts[n]} for n in shapes},
        "vocabulary": "".join(ck.vocab.chars), "vocabulary_size": len(ck.vocab),
        **{k: m.get(k) for k in SUMMARY_KEYS},
        "resumable": bool(ck.optim), "config_name": ck.config.name, "config": ck.config.to_dict(),
        "ngram": ({"order": ck.config.model.ngram_order, "chars": len(ck.ngram_ids), "weight": m.get("mix_weight")}
                  if ck.ngram_ids is not None else None),
    }


def load_checkpoint(path, with_training_state: bool = True) -> Checkpoint:
    """Read and validate a checkpoint (a file, or a run directory's: ``rundir.checkpoint_path``);
    ``CheckpointError`` for anything charlm did not write."""
    return _with_reader(checkpoint_path(path), lambda r: _read(r, with_training_state))


def _with_reader(p: Path, read):
    """``read(_Reader)`` on the archive at ``p``; any damage becomes a ``CheckpointError``."""
    try:
        with zipfile.ZipFile(p) as zf:
            return read(_Reader(zf, p, p.stat().st_size))
    except CharlmError:
        raise
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"{p}: not a charlm checkpoint (not a readable .npz archive: {e}); it may be truncated") from None
    except RecursionError:
        raise CheckpointError(f"{p}: invalid checkpoint metadata: nested too deeply") from None
    except (OSError, EOFError, ValueError, KeyError, TypeError, OverflowError, IndexError, SyntaxError,
            struct.error, zlib.error, zipfile.LargeZipFile, NotImplementedError, RuntimeError, MemoryError) as e:
        # Everything zipfile and the .npy header parser raise on damaged bytes; found by the
        # hypothesis fuzz test in tests/training/test_checkpoint_fuzz.py.
        raise CheckpointError(f"{p}: damaged checkpoint ({type(e).__name__}: {e})") from None


class _Reader:
    def __init__(self, zf: zipfile.ZipFile, path: Path, file_size: int):
        self.zf, self.path, self.file_size = zf, path, file_size
        self.names = set(zf.namelist())

    def has(self, key: str) -> bool:
        return key + ".npy" in self.names

    def array(self, key: str, shape: tuple, dtype) -> np.ndarray:
        """The array ``key``, refused unless its header says exactly ``shape`` and ``dtype``."""
        member = key + ".npy"
        if member not in self.names:
            raise CheckpointError(f"{self.path}: checkpoint lacks {key} (truncated, or not written by charlm)")
        dtype = np.dtype(dtype)
        with self.zf.open(member) as f:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0), (3, 0)):
                raise CheckpointError(f"{self.path}: {key} has an unknown .npy version {version}")
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            got_shape, fortran, got_dtype = read_header(f, max_header_size=10000)
            if got_dtype.hasobject:
                raise CheckpointError(f"{self.path}: {key} holds Python objects (pickle); charlm never loads those")
            if got_dtype != dtype or tuple(got_shape) != tuple(shape) or fortran:
                raise CheckpointError(
                    f"{self.path}: {key} is {got_dtype}{tuple(got_shape)}, expected {dtype}{tuple(shape)}"
                )
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if nbytes > self.file_size:
                raise CheckpointError(f"{self.path}: {key} claims {nbytes} bytes, more than the file holds")
        with self.zf.open(member) as f:
            a = np.lib.format.read_array(f, allow_pickle=False)
        return a

    def meta(self) -> dict:
        member = "meta_json.npy"
        if member not in self.names:
            raise CheckpointError(f"{self.path}: not a charlm checkpoint (no meta_json entry)")
        with self.zf.open(member) as f:
            np.lib.format.read_magic(f)
            shape, _, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=10000)
        if dtype != np.uint8 or len(shape) != 1 or shape[0] > min(MAX_META_BYTES, self.file_size):
            raise CheckpointError(f"{self.path}: not a charlm checkpoint (meta_json is not UTF-8 JSON bytes)")
        raw = self.array("meta_json", shape, np.uint8).tobytes()
        try:
            meta = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CheckpointError(f"{self.path}: not a charlm checkpoint (meta_json is not valid JSON)") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise CheckpointError(f"{self.path}: not a charlm checkpoint (no charlm format marker)")
        version = meta.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise CheckpointError(f"{self.path}: checkpoint has an invalid format version {version!r}")
        if version > FORMAT_VERSION:
            raise CheckpointError(
                f"{self.path}: checkpoint format version {version} is newer than this charlm reads "
                f"(up to {FORMAT_VERSION}); upgrade charlm"
            )
        return meta


# ---- the metadata's fields ------------------------------------------------------------------
# Every field a loader reads, and the form charlm writes it in: checked where the file is read,
# so no command meets a NaN score, a mixture weight of 5 or a lineage that is a string. A field
# may be absent (a weights-only file keeps few); present, it must have its form. MODEL_FIELDS
# are read by every command; PROGRESS_FIELDS only with the training state (resume, info, export).
MAX_COUNT = 1 << 62
MAX_NAME = 4096  # characters of a path or a name
MAX_LINEAGE = 64  # generations of fine-tuning


class _Bad(ValueError):
    """A field that is not of the form charlm writes: the field's path and what it should be."""


def _count(v, lo: int = 0) -> None:
    if not (isinstance(v, int) and not isinstance(v, bool) and lo <= v < MAX_COUNT):
        raise _Bad(f"an integer >= {lo}")


def _real(lo: float = -math.inf, hi: float = math.inf, optional: bool = False):
    def check(v) -> None:
        if v is None and optional:
            return
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and lo <= v <= hi):
            rng = "" if (lo, hi) == (-math.inf, math.inf) else f" in [{lo:g}, {hi:g}]"
            raise _Bad(f"a finite number{rng}" + (" or null" if optional else ""))
    return check


def _text(v) -> None:
    if not (isinstance(v, str) and len(v) <= MAX_NAME):
        raise _Bad(f"a string of at most {MAX_NAME} characters")


def _name(v) -> None:
    if not (isinstance(v, str) and len(v) <= 255):
        raise _Bad("a name of at most 255 characters")


def _texts(v) -> None:
    if not (isinstance(v, list) and len(v) <= MAX_COUNT and all(isinstance(x, str) and len(x) <= MAX_NAME for x in v)):
        raise _Bad("a list of strings")


def _fields(v, spec: dict, required: tuple = ()) -> None:
    """``v`` is an object whose fields in ``spec`` pass their checks (those in ``required`` present)."""
    if not isinstance(v, dict):
        raise _Bad("an object")
    for name, check in spec.items():
        if name in v:
            try:
                check(v[name])
            except _Bad as e:
                raise _Bad(f"{name}: {e}" if ": " in str(e) else f"{name} is {echo(v[name])}, not {e}") from None
        elif name in required:
            raise _Bad(f"{name} is missing")


def fingerprint_check(v) -> None:
    """A corpus fingerprint (data.Corpus.fingerprint), as a checkpoint records it."""
    _fields(v, {"path": _text, "chars": _count, "sha256": _text, "files": lambda x: _count(x, 1),
                "paths": _texts, "include": _texts, "exclude": _texts}, required=("path", "chars", "sha256"))


def _optional(check):
    return lambda v: None if v is None else check(v)


def lineage_check(v, depth: int = 0) -> None:
    """A fine-tuned model's lineage (finetune.py), its parents at most MAX_LINEAGE deep."""
    if depth >= MAX_LINEAGE:
        raise _Bad(f"at most {MAX_LINEAGE} generations deep")
    _fields(v, {"source": _text, "sha256": _text, "step": _optional(_count), "best_val": _real(0, optional=True),
                "corpus": _optional(fingerprint_check), "added_chars": _text,
                "parent": _optional(lambda p: lineage_check(p, depth + 1))}, required=("source", "sha256"))


def _rng_state(v) -> None:
    try:
        np.random.default_rng().bit_generator.state = v
    except (TypeError, ValueError, KeyError, OverflowError):
        raise _Bad("a NumPy generator's state") from None


MODEL_FIELDS = {
    "config_name": _name,
    "step": _count, "epoch": _count, "elapsed_s": _real(0), "best_val": _real(0, optional=True),
    "last_val": _real(0, optional=True), "train_chars": _count, "corpus": _optional(fingerprint_check),
    "mix_weight": _real(0, 1, optional=True), "net_val": _real(0, optional=True), "lineage": _optional(lineage_check),
    "ngram_chars": lambda v: _count(v, 1),
}
PROGRESS_FIELDS = {
    "optimizer_t": _count, "batch": _count, "loss_sum": _real(), "loss_count": _count,
    "plateau_ref": _real(optional=True), "stale_evals": _count, "lr": _real(0, optional=True), "rng": _rng_state,
    "rank_rngs": _optional(lambda v: [_rng_state(x) for x in v] if isinstance(v, list) else _fail("a list")),
}


def _fail(what: str):
    raise _Bad(what)


def check_meta(meta: dict, path, with_training_state: bool) -> None:
    """``CheckpointError`` naming the first field of ``meta`` that is not of the form charlm writes."""
    try:
        _fields(meta, {**MODEL_FIELDS, **(PROGRESS_FIELDS if with_training_state else {})})
    except _Bad as e:
        raise CheckpointError(f"{path}: invalid checkpoint metadata: {e}") from None


def _read(r: _Reader, with_training_state: bool) -> Checkpoint:
    path, file_size = r.path, r.file_size
    meta = r.meta()
    check_meta(meta, path, with_training_state)
    chars = meta.get("vocab")
    if not isinstance(chars, list) or not all(isinstance(c, str) for c in chars):
        raise CheckpointError(f"{path}: checkpoint vocabulary is not a list of characters")
    try:
        vocab = Vocab(chars)
        config = Config.from_dict(meta.get("config"), name=str(meta.get("config_name", "default")), where=f"{path} config")
    except CharlmError as e:
        raise CheckpointError(f"{path}: invalid checkpoint metadata: {e}") from None
    shapes = param_shapes(config.model, len(vocab))
    total = sum(int(np.prod(s)) for s in shapes.values()) * np.dtype(config.model.dtype).itemsize
    if total > file_size:
        raise CheckpointError(f"{path}: config describes {total} bytes of weights but the file has {file_size}; truncated or damaged")
    params = {name: r.array(f"param/{name}", shape, config.model.dtype) for name, shape in shapes.items()}
    for name, a in params.items():
        if not np.isfinite(a).all():
            raise CheckpointError(f"{path}: parameter {name} has non-finite values")
    meta["path"] = str(path)  # where it was read from (not stored in the file)
    ck = Checkpoint(config=config, vocab=vocab, params=params, meta=meta)
    n = meta.get("ngram_chars")
    if config.model.ngram_order and n is not None:
        ck.ngram_ids = r.array("ngram/ids", (n,), vocab.dtype)
        if int(ck.ngram_ids.max()) >= len(vocab):
            raise CheckpointError(f"{path}: ngram/ids holds ids outside the vocabulary")
    if with_training_state:
        slots = OPTIMIZERS[config.train.optimizer].slots
        if all(r.has(f"optim/{slot}/{name}") for slot in slots for name in shapes):
            ck.optim = {slot: {name: r.array(f"optim/{slot}/{name}", shape, config.model.dtype)
                               for name, shape in shapes.items()} for slot in slots}
        names = CELLS[config.model.type].state_names
        if all(r.has(f"state/l{l}/{s}") for l in range(config.model.num_layers) for s in names):
            B, H = config.data.batch_size, config.model.hidden_size
            ck.state = [tuple(r.array(f"state/l{l}/{s}", (H, B), config.model.dtype) for s in names)
                        for l in range(config.model.num_layers)]
    return ck
