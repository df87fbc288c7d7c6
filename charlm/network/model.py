"""The character model: L stacked recurrent layers, dropout between them (or variational
dropout after each), a linear head and a fused softmax + cross-entropy.

Shape letters: T time, B batch, V vocabulary, H hidden, L layers. Activations are feature-major,
(H, T, B), and logits (V, T*B): see cells/base.py for why.

All parameters live in one flat vector (``model.flat``) and all gradients in another
(``model.grad``); ``params``/``grads`` map names such as ``l0/Wx`` or ``head/W`` to views of
them. Clipping and the optimizer then work on two big arrays instead of looping over
parameters, and the checkpoint still saves them by name.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ..config import ModelConfig
from ..errors import NotFiniteError
from .cells import CELLS, RNN
from .cells.base import Buffers, cached_buffers, dropout_mask, init_weights, row_sums


def param_shapes(cfg: ModelConfig, vocab_size: int) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every parameter, in storage order, without allocating anything."""
    return {name: shape for name, shape in _named_shapes(make_layers(cfg, vocab_size), cfg, vocab_size)}


def window_shapes(cfg: ModelConfig, V: int, T: int, B: int) -> tuple[dict, dict]:
    """The model's own buffers for a (T, B) window, beside its layers': (the head's, each
    dropout site's). Allocation and memory.py's estimate both read them here."""
    H = cfg.hidden_size
    head = {"L": (V, T * B), "dH": (H, T, B)}  # logits, then probabilities, then dlogits; d loss / d top output
    # A variational mask is one column per stream, the same at every step (broadcast over T).
    dropout = {"mask": (H, 1, B) if cfg.variational_dropout else (H, T, B), "dropped": (H, T, B)}
    return head, dropout


def dropout_sites(cfg: ModelConfig) -> list[int]:
    """The layers whose outputs are dropped in training: every layer but the last with
    ``dropout``; every layer, the last (the head's input) too, with ``variational_dropout``."""
    if cfg.variational_dropout:
        return list(range(cfg.num_layers))
    return list(range(cfg.num_layers - 1)) if cfg.dropout else []


def make_layers(cfg: ModelConfig, V: int):
    cls = CELLS[cfg.type]
    layers = []
    for l in range(cfg.num_layers):
        D = V if l == 0 else cfg.hidden_size
        extra = {"activation": cfg.activation} if cls is RNN else {}
        layers.append(cls(D, cfg.hidden_size, onehot=(l == 0), dtype=cfg.dtype,
                          recurrent_dropout=cfg.variational_dropout, **extra))
    return layers


def _named_shapes(layers, cfg, V):
    for l, layer in enumerate(layers):
        for name, shape in layer.param_shapes().items():
            yield f"l{l}/{name}", shape
    yield "head/W", (V, cfg.hidden_size)
    yield "head/b", (V,)


class Model:
    def __init__(self, cfg: ModelConfig, vocab_size: int):
        self.cfg, self.V = cfg, vocab_size
        self.dtype = np.dtype(cfg.dtype)
        self.layers = make_layers(cfg, vocab_size)
        shapes = list(_named_shapes(self.layers, cfg, vocab_size))
        sizes = [int(np.prod(s)) for _, s in shapes]
        self.flat = np.zeros(sum(sizes), self.dtype)
        self.grad = np.zeros(sum(sizes), self.dtype)
        self.params, self.grads, self.slices = {}, {}, {}
        at = 0
        for (name, shape), n in zip(shapes, sizes):
            self.slices[name] = slice(at, at + n)
            self.params[name] = self.flat[at : at + n].reshape(shape)
            self.grads[name] = self.grad[at : at + n].reshape(shape)
            at += n
        for l, layer in enumerate(self.layers):
            pre = f"l{l}/"
            layer.bind({k[len(pre):]: v for k, v in self.params.items() if k.startswith(pre)},
                       {k[len(pre):]: v for k, v in self.grads.items() if k.startswith(pre)})
        self._head_bufs: dict = {}

    # ---- set-up ------------------------------------------------------------------------
    def init(self, rng: np.random.Generator) -> None:
        cfg = self.cfg
        for layer in self.layers:
            layer.init_params(rng, cfg.init, cfg.forget_bias)
        init_weights(rng, "xavier" if cfg.init == "he" else cfg.init, self.params["head/W"], self.params["head/b"],
                     fan_in=cfg.hidden_size, fan_out=self.V, hidden=cfg.hidden_size)  # the head is linear: he is for relu layers

    def param_counts(self) -> list[tuple[str, int]]:
        """[(group, count)] per layer and for the head, e.g. an RNN of 4 units on 2 inputs: 28."""
        groups: dict[str, int] = {}
        for name, p in self.params.items():
            groups[name.split("/")[0]] = groups.get(name.split("/")[0], 0) + p.size
        return list(groups.items())

    def zero_state(self, B: int) -> list[tuple[np.ndarray, ...]]:
        return [layer.zero_state(B) for layer in self.layers]

    # ---- training: forward + backward --------------------------------------------------
    def loss_and_grad(self, x, y, state, rng: np.random.Generator | None = None):
        """x, y (T, B) ids; state from ``zero_state`` -> (mean loss in nats, next state).

        Fills ``self.grad``. ``rng`` draws the dropout masks; without one there are
        none, as at inference (dynamic evaluation learns from scored text with the network it
        scored it with).
        """
        T, B = x.shape
        p = self.cfg.variational_dropout or self.cfg.dropout
        sites = dropout_sites(self.cfg) if rng is not None else []
        inp, masks = x, []
        for l, layer in enumerate(self.layers):
            out = layer.forward(inp, state[l], rng)  # (H, T, B)
            if l in sites:
                d = cached_buffers(self._head_bufs, (f"dropout{l}", T, B),
                                   lambda: Buffers(self.dtype, **window_shapes(self.cfg, self.V, T, B)[1]))
                masks.append(dropout_mask(rng, p, d.mask))
                inp = np.multiply(out, d.mask, out=d.dropped)
            else:
                masks.append(None)
                inp = out
        new_state = [layer.last_state() for layer in self.layers]
        hb = self._buffers(T, B)
        loss = self._softmax_xent(inp, y, hb)  # hb.L now holds dloss/dlogits (V, T*B)
        h2 = inp.reshape(self.cfg.hidden_size, T * B)
        np.matmul(hb.L, h2.T, out=self.grads["head/W"])
        row_sums(hb.L, out=self.grads["head/b"])
        dh = hb.dH
        np.matmul(self.params["head/W"].T, hb.L, out=dh.reshape(-1, T * B))
        for l in range(len(self.layers) - 1, -1, -1):
            if masks[l] is not None:
                dh *= masks[l]
            dh, _ = self.layers[l].backward(dh)  # truncated BPTT: the initial state's gradient stops here
        return loss, new_state

    def _buffers(self, T, B):
        return cached_buffers(self._head_bufs, ("head", T, B),
                              lambda: _HeadBuffers(self.dtype, window_shapes(self.cfg, self.V, T, B)[0], T * B))

    def _logits(self, h, hb):
        """h (H, T, B) -> hb.L (V, T*B) logits; column t*B + b is step t of stream b."""
        np.matmul(self.params["head/W"], h.reshape(h.shape[0], -1), out=hb.L)
        hb.L += self.params["head/b"][:, None]
        return hb.L

    def _softmax_xent(self, h, y, hb) -> float:
        """Mean cross-entropy of y under softmax(W h + b); leaves dloss/dlogits in hb.L."""
        L = self._logits(h, hb)
        N = L.shape[1]
        y, cols = y.reshape(-1), hb.cols
        picked, s = exp_shifted(L, y, cols)
        loss = float(np.log(s).sum() - picked.sum()) / N
        L *= (1.0 / (s * N)).astype(self.dtype)  # softmax / N ...
        L[y, cols] -= 1.0 / N  # ... minus onehot(y) / N: d mean loss / d logits
        return loss

    # ---- inference: no backward, no dropout -------------------------------------------
    @contextmanager
    def inference(self):
        """``with model.inference():`` promises the weights do not change inside, so each
        layer prepares its scaled weight copies once instead of at every forward call."""
        for layer in self.layers:
            layer.freeze()
        try:
            yield self
        finally:
            for layer in self.layers:
                layer.freeze(False)

    def forward(self, x, state):
        """x (T, B) ids -> (logits (V, T*B) in a reused buffer, next state). ``NotFiniteError``
        when a logit is not finite: every use of a model's predictions (scores, samples, the
        server) then says so in one line instead of reporting NaN."""
        T, B = x.shape
        inp = x
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported once, below
            for l, layer in enumerate(self.layers):
                inp = layer.forward(inp, state[l])
            new_state = [layer.last_state() for layer in self.layers]
            logits = self._logits(inp, self._buffers(T, B))
        if not np.isfinite(logits).all():
            raise NotFiniteError("the network's values are not finite on this text (its activations overflowed, as "
                                 "a relu RNN's hidden state can); there is no probability to report")
        return logits, new_state

    def nll(self, x, y, state):
        """x, y (T, B) ids -> (nll (T, B) float64 nats of each y given all before it, next state)."""
        T, B = x.shape
        L, new_state = self.forward(x, state)
        picked, s = exp_shifted(L, y.reshape(-1), self._buffers(T, B).cols)
        return (np.log(s) - picked).reshape(T, B), new_state


def exp_shifted(L: np.ndarray, y: np.ndarray | None = None, cols: np.ndarray | None = None):
    """The one softmax: in place on logits L (V, N), subtract each column's max (so exp never
    overflows), then exponentiate. -> (picked (N,): the shifted logit of y[n] in column n, or
    None without y; s (N,): each column's sum), both float64. log p(y) = picked - log s, and
    L / s is the softmax."""
    L -= L.max(axis=0)
    picked = None
    if y is not None:
        picked = L[y, np.arange(L.shape[1]) if cols is None else cols].astype(np.float64)
    np.exp(L, out=L)
    return picked, L.sum(axis=0, dtype=np.float64)


class _HeadBuffers(Buffers):
    def __init__(self, dtype, shapes: dict, N: int):
        super().__init__(dtype, **shapes)
        self.cols = np.arange(N)  # column n of the logits, for picking each target's
