"""Vanilla RNN over a window, forward and BPTT (Elman; min-char-rnn with Wxh, Whh, bh).

Shape letters: T time, B batch, D input, H hidden. Wx (H, D), Wh (H, H), b (H):

    h_t = act(Wx x_t + Wh h_{t-1} + b),  act tanh or relu
"""

from __future__ import annotations

import numpy as np

from .base import Layer


class RNN(Layer):
    gates = 1

    def __init__(self, input_size, hidden_size, onehot, dtype, activation="tanh"):
        super().__init__(input_size, hidden_size, onehot, dtype)
        self.activation = activation

    def buffer_shapes(self, kind, T, B):
        H = self.H
        if kind == "fwd":
            return dict(PRE=(T, H, B), Hs=(T + 1, H, B), HT=(H, T + 1, B), z=(H, B))
        return dict(dAt=(T, H, B), dT=(T, H, B), dh=(H, B), rec=(H, B), dx=self.dx_shape(T, B))

    def forward(self, x, state):
        """x (T, B) ids or (D, T, B), state ((H, B) h0,) -> out (H, T, B)."""
        T, B = self.window_shape(x)
        f = self.buffers("fwd", T, B)
        self.x, self.f = x, f
        self.project(x, f.PRE)
        f.Hs[0] = state[0]
        Wh, PRE, Hs, z = self.p["Wh"], f.PRE, f.Hs, f.z
        act = (lambda v, out: np.maximum(v, 0.0, out=out)) if self.activation == "relu" else np.tanh
        for t in range(T):
            np.matmul(Wh, Hs[t], out=z)
            z += PRE[t]
            act(z, out=Hs[t + 1])
        np.copyto(f.HT, Hs.transpose(1, 0, 2))
        return f.HT[:, 1:]

    def last_state(self):
        return (self.f.Hs[-1].copy(),)

    def state_grads(self):
        return (self.recurrent_T() @ self.bw.dAt[0],)

    def backward(self, dout):
        """dout (H, T, B) -> dx (D, T, B) or None; fills gWx, gWh, gb."""
        H, T, B = dout.shape
        Hs = self.f.Hs
        bw = self.buffers("bwd", T, B)
        dAt, dh, rec = bw.dAt, bw.dh, bw.rec
        if self.activation == "relu":
            np.greater(Hs[1:], 0.0, out=dAt)
        else:
            np.multiply(Hs[1:], Hs[1:], out=dAt)
            np.subtract(1.0, dAt, out=dAt)  # tanh' = 1 - h^2
        np.copyto(bw.dT, dout.transpose(1, 0, 2))
        WhT, dT = self.recurrent_T(), bw.dT
        rec.fill(0.0)
        for t in range(T - 1, -1, -1):
            np.add(dT[t], rec, out=dh)
            da = dAt[t]
            da *= dh
            if t:
                np.matmul(WhT, da, out=rec)
        dA = self.f.PRE.reshape(H, T, B)  # the forward's projection buffer is dead now
        np.copyto(dA, dAt.transpose(1, 0, 2))
        dA2 = dA.reshape(H, T * B)
        np.matmul(dA2, self.f.HT[:, :T].reshape(H, T * B).T, out=self.g["Wh"])
        self.bw = bw
        return self.project_backward(self.x, dA2, bw.dx)
