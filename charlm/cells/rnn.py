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

    def forward(self, x, state, train=True):
        """x (T, B) ids or (D, T, B), state ((H, B) h0,) -> out (H, T, B)."""
        T, B = self.window_shape(x)
        H = self.H
        f = self.buffers("fwd" if train else "inf", T, B, PRE=(H, T, B), HT=(H, T + 1, B), z=(H, B))
        self.x, self.f = x, f
        self.project(x, f.PRE)
        f.HT[:, 0] = state[0]
        Wh, PRE, HT, z = self.p["Wh"], f.PRE, f.HT, f.z
        relu = self.activation == "relu"
        for t in range(T):
            np.matmul(Wh, HT[:, t], out=z)
            z += PRE[:, t]
            if relu:
                np.maximum(z, 0.0, out=HT[:, t + 1])
            else:
                np.tanh(z, out=HT[:, t + 1])
        return HT[:, 1:]

    def last_state(self):
        return (self.f.HT[:, -1].copy(),)

    def state_grads(self):
        return (self.bw.rec.copy(),)

    def backward(self, dout):
        """dout (H, T, B) -> dx (D, T, B) or None; fills gWx, gWh, gb."""
        H, T, B = dout.shape
        HT = self.f.HT
        bw = self.buffers("bwd", T, B, dA=(H, T, B), dh=(H, B), rec=(H, B),
                          dx=(self.D, T, B) if not self.onehot else (0,))
        dA, dh, rec = bw.dA, bw.dh, bw.rec
        if self.activation == "relu":
            np.greater(HT[:, 1:], 0.0, out=dA)
        else:
            np.multiply(HT[:, 1:], HT[:, 1:], out=dA)
            np.subtract(1.0, dA, out=dA)  # tanh' = 1 - h^2
        WhT = self.recurrent_T()
        rec.fill(0.0)
        for t in range(T - 1, -1, -1):
            np.add(dout[:, t], rec, out=dh)
            da = dA[:, t]
            da *= dh
            np.matmul(WhT, da, out=rec)
        dA2 = dA.reshape(H, T * B)
        np.matmul(dA2, HT[:, :T].reshape(H, T * B).T, out=self.g["Wh"])
        self.bw = bw
        return self.project_backward(self.x, dA2, bw.dx)
