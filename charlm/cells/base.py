"""What every cell shares: parameters bound as views of the model's flat vector, the input
projection, its gradient, and per-shape preallocated buffers.

Shape letters: T time, B batch, D input size (V for the one-hot first layer), H hidden,
G gates (LSTM 4, GRU 3, RNN 1).
"""

from __future__ import annotations

import numpy as np


class Buffers:
    """Named arrays for one (T, B) window shape, allocated once and reused every step."""

    def __init__(self, dtype, **shapes):
        for name, shape in shapes.items():
            setattr(self, name, np.empty(shape, dtype=dtype))


class Layer:
    """One recurrent layer over a window.

    forward(x, state, train) -> out (T, B, H); x is (T, B) int ids when ``onehot``, else
    (T, B, D) floats; state is a tuple of (B, H) arrays, read and not modified.
    backward(dout (T, B, H)) -> dx (T, B, D), or None for the one-hot layer; fills ``grads``.
    ``dout`` is scratch: backward may overwrite it.
    """

    gates = 1
    state_names: tuple[str, ...] = ("h",)

    def __init__(self, input_size: int, hidden_size: int, onehot: bool, dtype):
        self.D, self.H, self.onehot = input_size, hidden_size, onehot
        self.dtype = np.dtype(dtype)
        self.p: dict[str, np.ndarray] = {}
        self.g: dict[str, np.ndarray] = {}
        self._bufs: dict[tuple, Buffers] = {}

    # ---- parameters -------------------------------------------------------------------
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        GH = self.gates * self.H
        return {"Wx": (self.D, GH), "Wh": (self.H, GH), "b": (GH,)}

    def bind(self, params: dict, grads: dict) -> None:
        """Take views of the model's flat parameter and gradient vectors."""
        self.p, self.g = params, grads

    def init_params(self, rng: np.random.Generator, scheme: str, forget_bias: float) -> None:
        """xavier: Glorot-uniform per gate block of Wx, orthogonal per gate block of Wh, zero
        biases. uniform: U(-k, k), k = 1/sqrt(H) for everything (PyTorch's nn.RNN/LSTM/GRU)."""
        H = self.H
        if scheme == "uniform":
            k = 1.0 / np.sqrt(H)
            for a in self.p.values():
                a[...] = rng.uniform(-k, k, a.shape)
            return
        limit = np.sqrt(6.0 / (self.D + H))
        for j in range(self.gates):
            self.p["Wx"][:, j * H : (j + 1) * H] = rng.uniform(-limit, limit, (self.D, H))
            self.p["Wh"][:, j * H : (j + 1) * H] = orthogonal(rng, H)
        for name, a in self.p.items():
            if name.startswith("b"):
                a[...] = 0.0

    def recurrent_T(self) -> np.ndarray:
        """A C-contiguous copy of Wh^T, refreshed each backward: (B, GH) @ (GH, H) runs ~25%
        faster in OpenBLAS on a contiguous matrix than on the transposed view."""
        WhT = getattr(self, "_WhT", None)
        if WhT is None or WhT.shape != self.p["Wh"].shape[::-1]:
            WhT = self._WhT = np.empty(self.p["Wh"].shape[::-1], self.dtype)
        np.copyto(WhT, self.p["Wh"].T)
        return WhT

    def zero_state(self, B: int) -> tuple[np.ndarray, ...]:
        return tuple(np.zeros((B, self.H), self.dtype) for _ in self.state_names)

    # ---- shared pieces of forward / backward ------------------------------------------
    def buffers(self, kind: str, T: int, B: int, **shapes) -> Buffers:
        """The ``kind`` ('fwd'/'bwd') buffers for a (T, B) window, allocated on first use. Two
        shapes are kept per kind: the training window and one other (a ragged last window)."""
        key = (kind, T, B)
        buf = self._bufs.get(key)
        if buf is None:
            same_kind = [k for k in self._bufs if k[0] == kind]
            if len(same_kind) >= 2:
                del self._bufs[same_kind[0]]
            buf = self._bufs[key] = Buffers(self.dtype, **shapes)
        return buf

    def project(self, x: np.ndarray, out: np.ndarray) -> None:
        """out (T*B, G*H) = x Wx + b for all T steps at once; one-hot x is a row gather."""
        if self.onehot:
            np.take(self.p["Wx"], x.reshape(-1), axis=0, out=out, mode="clip")
        else:
            np.matmul(x.reshape(-1, self.D), self.p["Wx"], out=out)
        out += self.p["b"]

    def project_backward(self, x: np.ndarray, dA: np.ndarray, dx_buf: np.ndarray | None):
        """dA (T*B, G*H) gradient of the projection -> fills gWx, gb; returns dx (T, B, D)."""
        np.sum(dA, axis=0, out=self.g["b"])
        if self.onehot:
            # d Wx = onehot(x)^T dA, with the one-hot over the distinct ids of this window only,
            # so a large vocabulary costs no more than the window has distinct characters.
            ids, inverse = np.unique(x.reshape(-1), return_inverse=True)
            onehot = np.zeros((dA.shape[0], len(ids)), dtype=dA.dtype)
            onehot[np.arange(dA.shape[0]), inverse.reshape(-1)] = 1.0
            self.g["Wx"].fill(0.0)
            self.g["Wx"][ids] = onehot.T @ dA
            return None
        x2 = x.reshape(-1, self.D)
        np.matmul(x2.T, dA, out=self.g["Wx"])
        np.matmul(dA, self.p["Wx"].T, out=dx_buf.reshape(-1, self.D))
        return dx_buf


def orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random (n, n) orthogonal matrix: recurrent products then neither grow nor shrink a
    state at init, which keeps early BPTT gradients from vanishing or exploding."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))
