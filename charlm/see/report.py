"""``charlm report``: one self-contained HTML page about a run, to open offline: its loss
curves and samples, an explained score of held-out text, a hidden-unit explorer with the
units that track simple features, and the gradient-flow chart. The page's data is JSON in a
<script> element, drawn by the page's own JavaScript (report.js beside this file) into SVG;
nothing is fetched from anywhere.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from ..errors import CharlmError
from ..predict.adapt import Adaptive, AdaptOptions
from ..predict.checkpoint import load_checkpoint
from ..text.corpus import load_corpus, split
from ..text.sources import CorpusSource
from ..training.finetune import describe_lineage
from ..training.rundir import RunDir
from ..use.score import explain, score_texts
from .introspect import activations, correlations, features, gradient_flow
from .plot import read_run

ASSETS = Path(__file__).parent / "report_assets"
REPORT_CHARS = 1000  # characters of held-out text the report explains


def validation_ids(ck, corpus=None) -> np.ndarray:
    """The validation split of the run's corpus (or of ``corpus``), encoded with the model's
    vocabulary: a view of the corpus's ids (a memory map for a cached corpus), never a copy."""
    source = CorpusSource.of(corpus) if corpus else CorpusSource.from_fingerprint(ck.meta.get("corpus") or {})
    if source is None or not all(Path(p).exists() for p in source.paths):
        raise CharlmError(f"the run's corpus {'?' if source is None else source.label!r} is not here; give the "
                          "corpus it was trained on (corpus=...)")
    _, val = split(load_corpus(source, vocab=ck.vocab).ids, ck.config.data.val_fraction)
    if len(val) < 100:
        raise CharlmError(f"{source.label}: the validation split has {len(val)} characters; a report needs at "
                          "least 100")
    return val


def held_out_text(ck, val: np.ndarray, chars: int = REPORT_CHARS) -> str:
    """``chars`` characters of the validation split, from the start of a line."""
    text = ck.vocab.decode(val[: chars + 200])
    start = text.find("\n") + 1 if "\n" in text[:200] else 0
    return text[start : start + chars]


def _quantised(a: np.ndarray) -> tuple[str, list[float]]:
    """(T, H) activations -> base64 int8 (row-major) and the per-unit scale that undoes it."""
    scale = np.maximum(np.abs(a).max(axis=0), 1e-9)
    q = np.clip(np.round(a / scale * 127), -127, 127).astype(np.int8)
    return base64.b64encode(q.tobytes()).decode("ascii"), [float(s) for s in scale]


def report_data(run_dir, corpus=None, chars: int = REPORT_CHARS, grad_steps: int = 50, grad_streams: int = 48,
                adapt: AdaptOptions | None = None) -> dict:
    """Everything the page shows; ``adapt``: explain the held-out text with dynamic evaluation."""
    run = read_run(run_dir)
    ck = load_checkpoint(run_dir, with_training_state=False)
    model = ck.build_model()
    val = validation_ids(ck, corpus)
    text = held_out_text(ck, val, chars)
    predictor = ck.build_predictor() if adapt is None else Adaptive(ck.build_predictor(), adapt)
    explained = explain(predictor, ck.vocab, text)  # as charlm score --explain shows it
    bpc = sum(c.bits for c in explained) / len(explained)
    total = f"{bpc:.3f} bits/char over {len(explained):,} characters"
    if adapt is not None:
        [static] = score_texts(ck.build_predictor(), ck.vocab, [text])
        total += (f", adapted as it was read (charlm score --adapt: segment {adapt.segment}, lr {adapt.lr:g}, "
                  f"decay {adapt.decay:g}); {static.bits_per_char:.3f} static")
    acts = activations(model, ck.vocab, text)
    units = {}
    for key, a in acts.items():
        data, scale = _quantised(a)
        units[key] = {"data": data, "scale": scale, "H": a.shape[1]}
    samples = RunDir(run_dir).samples()
    flow = gradient_flow(model, val, K=min(grad_steps, (len(val) - 2) // 3), streams=grad_streams)
    m = ck.config.model
    return {
        "name": run.name, "checkpoint": ck.meta["path"],
        "model": f"{m.type.upper()} {m.num_layers}x{m.hidden_size}",
        "best_val": ck.meta.get("best_val"), "step": ck.meta.get("step"),
        "lineage": describe_lineage(ck.meta.get("lineage")), "mixture": _mixture_line(ck),
        "metrics": [{k: r.get(k) for k in ("step", "elapsed_s", "train_loss", "val_loss", "lr")} for r in run.records],
        "samples": [{"step": s.get("step"), "text": s.get("text", "")} for s in samples],
        "text": text, "explain_total": total,
        "chars": [[c.bits, c.rank, [[ch, p] for ch, p in c.top]] for c in explained],
        "units": units,
        "correlations": correlations(acts, features(text)),
        "gradient_flow": flow,
    }


def _mixture_line(ck) -> str | None:
    w = ck.meta.get("mix_weight")
    if ck.ngram_ids is None or not isinstance(w, float):
        return None
    return f"mixed with a {ck.config.model.ngram_order}-gram of its training text (weight {w:.3f} on the network)"


def render(data: dict) -> str:
    """The page: the template with its CSS, JavaScript and data inlined."""
    page = (ASSETS / "report.html").read_text(encoding="utf-8")
    payload = json.dumps(data, allow_nan=False).replace("</", "<\\/")  # cannot close the <script>
    return (page.replace("{{TITLE}}", html.escape(f"charlm report: {data['name']}"))
                .replace("{{CSS}}", (ASSETS / "report.css").read_text(encoding="utf-8"))
                .replace("{{JS}}", (ASSETS / "report.js").read_text(encoding="utf-8"))
                .replace("{{DATA}}", payload))


def write_report(run_dir, out, corpus=None, chars: int = REPORT_CHARS, adapt: AdaptOptions | None = None) -> Path:
    from ..files import atomic_write_text

    out = Path(out)
    atomic_write_text(out, render(report_data(run_dir, corpus, chars, adapt=adapt)))
    return out
