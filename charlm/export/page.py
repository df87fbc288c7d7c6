"""A checkpoint's network as one self-contained web page (``charlm export CKPT -o page.html``):
the weights inside it as base64 float32, the network's equations in ``network/cells/cells.js`` (beside
the NumPy cells it mirrors), and ``page.js``, which samples and scores. It works from
``file://`` with no network; its size is the weights' times 4/3 (base64) and about 15 KB more.

The page's address says what to do: ``page.html#prime=ROMEO:&temperature=0.8`` starts a sample
(also ``top_p``, ``length``, ``seed``); ``page.html#score=TEXT`` shows TEXT's bits per character in
the element with id ``bits-per-char``, as ``charlm score --network-only TEXT`` prints it.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from ..files import atomic_write_text
from ..predict.checkpoint import Checkpoint

HERE = Path(__file__).parent
CELLS_JS = HERE.parent / "network" / "cells" / "cells.js"


def _script_json(obj) -> str:
    """JSON that cannot end its <script> element early."""
    return json.dumps(obj, ensure_ascii=False).replace("</", "<\\/")


def render(ck: Checkpoint) -> str:
    m = ck.config.model
    tensors, offset, parts = [], 0, []
    for name, a in ck.params.items():
        tensors.append({"name": name, "shape": list(a.shape), "offset": offset, "size": int(a.size)})
        offset += a.size
        parts.append(np.ascontiguousarray(a, dtype="<f4").reshape(-1))
    weights = base64.b64encode(np.concatenate(parts).tobytes()).decode("ascii")
    name = Path(str(ck.meta.get("path", "model"))).stem if ck.meta.get("path") else "model"
    best = ck.meta.get("best_val")
    about = (f"The network: {m.type.upper()}, {m.num_layers} layer{'s' * (m.num_layers > 1)} of {m.hidden_size} "
             f"units, {len(ck.vocab)} characters"
             + (f", {best:.3f} nats/char on its validation split" if isinstance(best, float) else "") + ".")
    if ck.ngram_ids is not None:
        about += f" The network alone: the {m.ngram_order}-gram it was mixed with in charlm is not in this page."
    prime = "ROMEO:" if all(c in ck.vocab.chars for c in "ROMEO:") else ck.vocab.chars[0]
    data = {"config": ck.config.to_dict(), "vocabulary": list(ck.vocab.chars), "tensors": tensors,
            "lineage": ck.meta.get("lineage")}
    page = (HERE / "page.html").read_text(encoding="utf-8")
    for key, value in (("TITLE", html.escape(f"charlm: {name}")), ("ABOUT", html.escape(about)),
                       ("PRIME", html.escape(prime)), ("MODEL", _script_json(data)), ("WEIGHTS", weights),
                       ("CELLS", CELLS_JS.read_text(encoding="utf-8")), ("PAGE", (HERE / "page.js").read_text(encoding="utf-8"))):
        page = page.replace("{{" + key + "}}", value)
    return page


def write(ck: Checkpoint, path) -> None:
    atomic_write_text(path, render(ck))
