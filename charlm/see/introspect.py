"""Looking inside a trained model: hidden-unit activations over a text, the units that track
simple features of the text (Karpathy, Johnson and Fei-Fei, "Visualizing and Understanding
Recurrent Networks", 2015), and how far back the gradient reaches (the vanishing-gradient
picture: an LSTM's stays larger over more steps than a vanilla RNN's).

Shape letters: T time, B batch, H hidden, L layers, K steps back.
"""

from __future__ import annotations

import numpy as np

from ..network.model import Model, exp_shifted
from ..text.vocab import Vocab

PUNCTUATION = set(".,;:!?")
OPENERS, CLOSERS = {"(": ")", "[": "]", '"': '"'}, {")", "]"}


def activations(model: Model, vocab: Vocab, text: str, context: str = "\n", window: int = 256) -> dict:
    """'l0/h' (and 'l0/c' for an LSTM) ... -> (T, H) float arrays: each unit's value after
    reading each character of ``text`` (the context is read first)."""
    ids = vocab.encode(context + text).astype(np.int64)
    C = len(context)
    out: dict[str, list] = {}
    with model.inference():
        state = model.zero_state(1)
        for t0 in range(0, len(ids), window):
            _, state = model.forward(ids[t0 : t0 + window, None], state)
            for l, layer in enumerate(model.layers):
                for name in layer.state_names:
                    seq = getattr(layer.fw, name)[1:, :, 0]  # (t, H): after each character of the window
                    out.setdefault(f"l{l}/{name}", []).append(seq.astype(np.float64))
    return {k: np.concatenate(v)[C:] for k, v in out.items()}


def features(text: str) -> dict[str, np.ndarray]:
    """Simple properties of every position of ``text``, as float (T,) arrays."""
    T = len(text)
    pos = np.zeros(T)
    start = np.zeros(T)
    inside = np.zeros(T)
    after_punct = np.zeros(T)
    speaker = np.zeros(T)
    col, depth, quote = 0, 0, False
    lines = text.split("\n")
    is_speaker = [ln.strip().endswith(":") and ln.strip()[:-1].replace(" ", "").isupper() for ln in lines]
    line_no = 0
    for t, ch in enumerate(text):
        pos[t] = col
        start[t] = col == 0
        speaker[t] = is_speaker[line_no] and ch != "\n"
        if ch == '"':
            quote = not quote
        elif ch in OPENERS:
            depth += 1
        elif ch in CLOSERS:
            depth = max(0, depth - 1)
        inside[t] = quote or depth > 0
        after_punct[t] = t > 0 and text[t - 1] in PUNCTUATION
        if ch == "\n":
            col, line_no = 0, line_no + 1
        else:
            col += 1
    return {"position in the line": pos, "start of a line": start, "inside quotes or brackets": inside,
            "upper-case speaker name": speaker, "after punctuation": after_punct}


def correlations(acts: dict, feats: dict, top: int = 3) -> list[dict]:
    """For each feature, the ``top`` units whose activation correlates best with it (by
    |Pearson r|): [{feature, unit ('l1/c'), index, r}], features that never vary left out."""
    rows = []
    for fname, f in feats.items():
        fc = f - f.mean()
        if not fc.any():
            continue
        best = []
        for key, a in acts.items():
            ac = a - a.mean(axis=0)
            denom = np.sqrt((ac * ac).sum(axis=0) * (fc * fc).sum())
            r = np.divide(fc @ ac, denom, out=np.zeros(a.shape[1]), where=denom > 0)
            for i in np.argsort(-np.abs(r))[:top]:
                best.append({"feature": fname, "unit": key, "index": int(i), "r": float(r[i])})
        rows += sorted(best, key=lambda d: -abs(d["r"]))[:top]
    return rows


def gradient_flow(model: Model, ids: np.ndarray, K: int = 50, streams: int = 16, seed: int = 0) -> dict:
    """||d loss_t / d h_{t-k}|| for k = 1..K, averaged over ``streams`` random positions t of
    ``ids``: loss_t is the cross-entropy of the character after position t alone. One
    forward + backward per k, with the state before the window taken from a forward pass.
    -> {'k': [1..K], 'l0/h': [...], ...} (per layer and state name)."""
    rng = np.random.default_rng(seed)
    T_total = len(ids)
    ends = rng.integers(2 * K + 1, T_total - 1, streams)
    out: dict[str, list] = {"k": list(range(1, K + 1))}
    # The state just before each window: run from K steps earlier (long enough to be typical).
    for k in range(1, K + 1):
        starts = ends - k + 1  # the window is x[start .. end], its first step sees h_{start-1}
        warm = np.stack([ids[s - K : s] for s in starts], axis=1).astype(np.int64)  # (K, B)
        x = np.stack([ids[s : e + 1] for s, e in zip(starts, ends)], axis=1).astype(np.int64)  # (k, B)
        y = ids[ends + 1]
        state = model.zero_state(streams)
        _, state = model.forward(warm, state)
        state = [tuple(a.copy() for a in s) for s in state]
        grads = _last_step_state_grads(model, x, y, state)
        for l, (layer, g) in enumerate(zip(model.layers, grads)):
            for name, d in zip(layer.state_names, g):
                out.setdefault(f"l{l}/{name}", []).append(float(np.linalg.norm(d, axis=0).mean()))
    return out


def _last_step_state_grads(model: Model, x, y, state):
    """Gradients of the last step's cross-entropy (mean over the batch) with respect to every
    layer's initial state: a list per layer of tuples of (H, B)."""
    T, B = x.shape
    inp = x
    for l, layer in enumerate(model.layers):
        inp = layer.forward(inp, state[l])
    W, b = model.params["head/W"], model.params["head/b"]
    last = inp[:, -1].astype(np.float64)  # (H, B)
    logits = W.astype(np.float64) @ last + b[:, None]
    _, s = exp_shifted(logits)
    dlogits = logits / s
    dlogits[y, np.arange(B)] -= 1.0
    dlogits /= B
    dh = np.zeros(inp.shape, model.dtype)
    dh[:, -1] = W.T @ dlogits
    grads = [None] * len(model.layers)
    for l in range(len(model.layers) - 1, -1, -1):
        dh, grads[l] = model.layers[l].backward(dh)
        grads[l] = tuple(g.copy() for g in grads[l])
        if dh is not None:
            dh = dh.copy()
    return grads
