"""A checkpoint's model for use outside charlm: ``charlm export CKPT -o FILE``.

The format follows FILE's suffix, or ``format``: ``.onnx`` (onnx.py: the network as an ONNX
graph), ``.html`` (page.py: one self-contained page that samples and scores in the browser),
anything else ``.npz`` (the model alone, weights-only, for charlm itself). ONNX and the page
hold the network alone: a mixture's n-gram stays behind, and ``describe_mixture`` says what
that costs on the validation split.
"""

from __future__ import annotations

from pathlib import Path

from ..predict.checkpoint import Checkpoint, export_weights

FORMATS = ("npz", "onnx", "html")


def format_of(path, fmt: str | None = None) -> str:
    if fmt is not None:
        return fmt
    suffix = Path(path).suffix.lower().lstrip(".")
    return suffix if suffix in ("onnx", "html") else "npz"


def export(ck: Checkpoint, path, fmt: str | None = None) -> str:
    """Write ``ck``'s model to ``path`` as ``fmt`` (default: by suffix); the format written."""
    fmt = format_of(path, fmt)
    if fmt == "onnx":
        from . import onnx

        onnx.write(ck, path)
    elif fmt == "html":
        from . import page

        page.write(ck, path)
    else:
        export_weights(ck, path)
    return fmt


def describe_mixture(ck: Checkpoint) -> str | None:
    """For a checkpoint with a fitted mixture: that the export holds the network alone, and what
    each scored on the validation split at the checkpoint's last evaluation."""
    if ck.ngram_ids is None or ck.meta.get("mix_weight") is None:
        return None
    net, mixed = ck.meta.get("net_val"), ck.meta.get("last_val")
    scores = (f": the network alone scored {net:.4f} nats/char on the validation split, the mixture {mixed:.4f}"
              if net is not None and mixed is not None else
              " (this checkpoint does not record the network's own validation loss; "
              "charlm score --network-only scores with the network alone)")
    return f"the {ck.config.model.ngram_order}-gram mixed with this model is not exported, only its network{scores}"
