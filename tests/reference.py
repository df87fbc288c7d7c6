"""An executable specification: the cells and the model written the way the equations are,
one time step, one gate, one line at a time, in float64, with no fusion, no scaled weights
and no reused buffers (cs231n's rnn_layers.py and min-char-rnn are the models).

Weights use charlm's fused layout so the fast model's parameters can be compared directly:
Wx (G, D), Wh (G, H), b (G,), gate blocks of H rows in the order each cell's file names
([o, i, f, g] for the LSTM, [r, z, n] for the GRU). Column vectors: x_t (D, B), h_t (H, B).
tests/network/test_reference.py checks that the fast cells compute exactly this.

Training noise, where a test passes it: m, a layer's recurrent-dropout mask (H, B), multiplies
h_{t-1} where it enters Wh (m = 1: none); a layer's output mask (H, B) multiplies every step's
output.
"""

from __future__ import annotations

import numpy as np


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def blocks(W, n):
    """The n gate blocks of a fused (nH, ...) weight."""
    H = W.shape[0] // n
    return [W[k * H : (k + 1) * H] for k in range(n)]


# ---- vanilla RNN -------------------------------------------------------------------------
def rnn_step_forward(x, h_prev, p, activation="tanh", m=1.0):
    a = p["Wx"] @ x + p["Wh"] @ (m * h_prev) + p["b"][:, None]
    h = np.tanh(a) if activation == "tanh" else np.maximum(a, 0.0)
    return h, (x, m * h_prev, h, m)


def rnn_step_backward(dh, cache, p, g, activation="tanh"):
    x, h_rec, h, m = cache
    da = dh * (1.0 - h * h) if activation == "tanh" else dh * (h > 0)  # act' from the output
    g["Wx"] += da @ x.T
    g["Wh"] += da @ h_rec.T
    g["b"] += da.sum(axis=1)
    return p["Wx"].T @ da, m * (p["Wh"].T @ da)  # dx, dh_prev


# ---- LSTM --------------------------------------------------------------------------------
def lstm_step_forward(x, h_prev, c_prev, p, m=1.0):
    Wxo, Wxi, Wxf, Wxg = blocks(p["Wx"], 4)
    Who, Whi, Whf, Whg = blocks(p["Wh"], 4)
    bo, bi, bf, bg = (b[:, None] for b in blocks(p["b"], 4))
    h_rec = m * h_prev
    o = sigmoid(Wxo @ x + Who @ h_rec + bo)
    i = sigmoid(Wxi @ x + Whi @ h_rec + bi)
    f = sigmoid(Wxf @ x + Whf @ h_rec + bf)
    g = np.tanh(Wxg @ x + Whg @ h_rec + bg)
    c = f * c_prev + i * g
    h = o * np.tanh(c)
    return h, c, (x, h_rec, c_prev, o, i, f, g, m, c)  # c last: a window's final cell state


def lstm_step_backward(dh, dc, cache, p, grads):
    x, h_rec, c_prev, o, i, f, g, m, c = cache
    tc = np.tanh(c)
    do = dh * tc
    dc = dc + dh * o * (1.0 - tc * tc)
    df = dc * c_prev
    di = dc * g
    dg = dc * i
    dc_prev = dc * f
    da = np.concatenate([do * o * (1 - o), di * i * (1 - i), df * f * (1 - f), dg * (1 - g * g)])
    grads["Wx"] += da @ x.T
    grads["Wh"] += da @ h_rec.T
    grads["b"] += da.sum(axis=1)
    dh_prev = m * (p["Wh"].T @ da)
    return p["Wx"].T @ da, dh_prev, dc_prev  # dx, dh_prev, dc_prev


# ---- GRU (reset after the recurrent product, as cuDNN and PyTorch) ------------------------
def gru_step_forward(x, h_prev, p, m=1.0):
    Wxr, Wxz, Wxn = blocks(p["Wx"], 3)
    Whr, Whz, Whn = blocks(p["Wh"], 3)
    br, bz, bn = (b[:, None] for b in blocks(p["b"], 3))
    h_rec = m * h_prev  # what the recurrent products see; z mixes in h_prev itself
    r = sigmoid(Wxr @ x + Whr @ h_rec + br)
    z = sigmoid(Wxz @ x + Whz @ h_rec + bz)
    hn = Whn @ h_rec + p["bhn"][:, None]
    n = np.tanh(Wxn @ x + bn + r * hn)
    h = (1.0 - z) * n + z * h_prev
    return h, (x, h_prev, h_rec, m, r, z, hn, n)


def gru_step_backward(dh, cache, p, grads):
    x, h_prev, h_rec, m, r, z, hn, n = cache
    Wxr, Wxz, Wxn = blocks(p["Wx"], 3)
    Whr, Whz, Whn = blocks(p["Wh"], 3)
    dn = dh * (1.0 - z)
    dz = dh * (h_prev - n)
    dh_prev = dh * z
    dan = dn * (1.0 - n * n)  # through tanh
    dr = dan * hn
    dhn = dan * r
    dar = dr * r * (1.0 - r)
    daz = dz * z * (1.0 - z)
    grads["Wx"] += np.concatenate([dar @ x.T, daz @ x.T, dan @ x.T])
    grads["Wh"] += np.concatenate([dar @ h_rec.T, daz @ h_rec.T, dhn @ h_rec.T])
    grads["b"] += np.concatenate([dar.sum(axis=1), daz.sum(axis=1), dan.sum(axis=1)])
    grads["bhn"] += dhn.sum(axis=1)
    dx = Wxr.T @ dar + Wxz.T @ daz + Wxn.T @ dan
    dh_prev = dh_prev + m * (Whr.T @ dar + Whz.T @ daz + Whn.T @ dhn)
    return dx, dh_prev


# ---- a layer over a window: a loop over time ----------------------------------------------
def layer_forward(kind, xs, state, p, activation="tanh", m=1.0):
    """xs: list of T inputs (D, B); state: tuple of (H, B); m: the recurrent-dropout mask
    -> (list of T outputs, caches)."""
    hs, caches = [], []
    h = state[0]
    c = state[1] if kind == "lstm" else None
    for x in xs:
        if kind == "rnn":
            h, cache = rnn_step_forward(x, h, p, activation, m)
        elif kind == "lstm":
            h, c, cache = lstm_step_forward(x, h, c, p, m)
        else:
            h, cache = gru_step_forward(x, h, p, m)
        hs.append(h)
        caches.append(cache)
    return hs, caches


def layer_backward(kind, dhs, caches, p, activation="tanh"):
    """dhs: list of T (H, B) gradients from above -> (list of T dx, initial-state grads, grads).

    Truncated BPTT: the gradient carried into the last step from beyond the window is zero.
    """
    grads = {k: np.zeros_like(v) for k, v in p.items()}
    dxs = [None] * len(dhs)
    dh_next = np.zeros_like(dhs[0])
    dc_next = np.zeros_like(dhs[0])
    for t in reversed(range(len(dhs))):
        dh = dhs[t] + dh_next
        if kind == "rnn":
            dxs[t], dh_next = rnn_step_backward(dh, caches[t], p, grads, activation)
        elif kind == "lstm":
            dxs[t], dh_next, dc_next = lstm_step_backward(dh, dc_next, caches[t], p, grads)
        else:
            dxs[t], dh_next = gru_step_backward(dh, caches[t], p, grads)
    dstate = (dh_next, dc_next) if kind == "lstm" else (dh_next,)
    return dxs, dstate, grads


# ---- the model: layers, a linear head, softmax cross-entropy ------------------------------
def onehot(ids, V):
    """(B,) ids -> (V, B) one-hot columns."""
    x = np.zeros((V, len(ids)))
    x[ids, np.arange(len(ids))] = 1.0
    return x


def model_loss_and_grads(kind, params, x, y, state, V, activation="tanh", noise=None):
    """params: name -> array as charlm names them (l0/Wx, ..., head/W, head/b); x, y (T, B)
    ids; state: per layer a tuple of (H, B); noise: per layer a dict of its masks, "m" as
    layer_forward takes it and "out" (H, B) on its output (variational dropout).
    -> (mean cross-entropy, name -> gradient)."""
    L = len(state)
    T, B = x.shape
    noise = noise or [{} for _ in range(L)]
    layer_p = [{k.split("/")[1]: v for k, v in params.items() if k.startswith(f"l{l}/")} for l in range(L)]
    inputs = [onehot(x[t], V) for t in range(T)]
    caches = []
    for l in range(L):
        inputs, cache = layer_forward(kind, inputs, state[l], layer_p[l], activation, noise[l].get("m", 1.0))
        inputs = [noise[l].get("out", 1.0) * h for h in inputs]
        caches.append(cache)
    W, b = params["head/W"], params["head/b"]
    loss, dhs = 0.0, []
    grads = {"head/W": np.zeros_like(W), "head/b": np.zeros_like(b)}
    for t in range(T):
        logits = W @ inputs[t] + b[:, None]  # (V, B)
        logits = logits - logits.max(axis=0)
        prob = np.exp(logits) / np.exp(logits).sum(axis=0)
        loss -= np.log(prob[y[t], np.arange(B)]).sum()
        dlogits = prob.copy()
        dlogits[y[t], np.arange(B)] -= 1.0  # softmax + cross-entropy: p - onehot(y)
        dlogits /= T * B
        grads["head/W"] += dlogits @ inputs[t].T
        grads["head/b"] += dlogits.sum(axis=1)
        dhs.append(W.T @ dlogits)
    for l in reversed(range(L)):
        dhs = [noise[l].get("out", 1.0) * dh for dh in dhs]
        dhs, _, g = layer_backward(kind, dhs, caches[l], layer_p[l], activation)
        grads.update({f"l{l}/{k}": v for k, v in g.items()})
    return loss / (T * B), grads


# ---- interpolated Kneser-Ney, on strings ---------------------------------------------------
class KneserNeyReference:
    """charlm/predict/ngram.py's model written with dictionaries of strings, one context at a time:
    fit(text) counts n-grams up to ``order``; prob(w, h) is P(w | the last order-1 characters of h)."""

    def __init__(self, text: str, order: int = 5, vocab_size: int | None = None):
        from collections import Counter

        self.n = order
        self.V = vocab_size or len(set(text))
        grams = [Counter(text[i : i + n] for i in range(len(text) - n + 1)) for n in range(1, order + 1)]
        counts = [None] * order
        counts[-1] = grams[-1]  # occurrences at the top order
        for n in range(order - 1, 0, -1):  # continuation counts below: distinct characters before
            cont = Counter()
            for g in grams[n]:
                cont[g[1:]] += 1
            counts[n - 1] = cont
        self.orders = []
        for c in counts:
            totals, types = Counter(), Counter()
            for g, k in c.items():
                totals[g[:-1]] += k
                types[g[:-1]] += 1
            n1 = sum(1 for k in c.values() if k == 1)
            n2 = sum(1 for k in c.values() if k == 2)
            self.orders.append((c, totals, types, n1 / (n1 + 2 * n2) if n1 + n2 else 0.5))

    def prob(self, w: str, h: str) -> float:
        p = 1.0 / self.V
        for k in range(self.n):  # unigram level first, then longer contexts interpolate on top
            ctx = h[len(h) - k :] if k else ""
            if len(ctx) < k:
                break
            counts, totals, types, D = self.orders[k]
            total = totals.get(ctx, 0)
            if total == 0:
                break  # an unseen context: the shorter one's estimate stands
            p = max(counts.get(ctx + w, 0) - D, 0.0) / total + D * types[ctx] / total * p
        return p
