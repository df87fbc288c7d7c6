"""Vanilla RNN over a window, forward and BPTT (Elman; min-char-rnn with Wxh, Whh, bh).

Shape letters: T time, B batch, D input, H hidden. Wx (D, H), Wh (H, H), b (H):

    h_t = act(x_t Wx + h_{t-1} Wh + b),  act tanh or relu
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
        """x (T, B) ids or (T, B, D), state ((B, H) h0,) -> out (T, B, H)."""
        T, B = x.shape[:2]
        H = self.H
        f = self.buffers("fwd" if train else "inf", T, B, Hs=(T + 1, B, H), z=(B, H))
        self.x, self.f = x, f
        Hs, Wh, z = f.Hs, self.p["Wh"], f.z
        out = Hs[1:]
        self.project(x, out.reshape(T * B, H))  # pre-activations, overwritten step by step
        Hs[0] = state[0]
        relu = self.activation == "relu"
        for t in range(T):
            a = Hs[t + 1]
            a += np.matmul(Hs[t], Wh, out=z)
            if relu:
                np.maximum(a, 0.0, out=a)
            else:
                np.tanh(a, out=a)
        return out

    def last_state(self):
        return (self.f.Hs[-1].copy(),)

    def state_grads(self):
        return (self.bw.dA[0] @ self.p["Wh"].T,)

    def backward(self, dout):
        """dout (T, B, H) -> dx (T, B, D) or None; fills gWx, gWh, gb."""
        T, B, H = dout.shape
        Hs = self.f.Hs
        bw = self.buffers("bwd", T, B, dA=(T, B, H), z=(B, H), dx=(T, B, self.D) if not self.onehot else (0,))
        dA, z = bw.dA, bw.z
        if self.activation == "relu":
            np.greater(Hs[1:], 0.0, out=dA)
        else:
            np.multiply(Hs[1:], Hs[1:], out=dA)
            np.subtract(1.0, dA, out=dA)  # tanh' = 1 - h^2
        WhT = self.recurrent_T()
        for t in range(T - 1, -1, -1):
            dh = dout[t]
            if t < T - 1:
                dh += np.matmul(dA[t + 1], WhT, out=z)
            dA[t] *= dh
        dA2 = dA.reshape(T * B, H)
        np.matmul(Hs[:-1].reshape(T * B, H).T, dA2, out=self.g["Wh"])
        self.bw = bw
        return self.project_backward(self.x, dA2, bw.dx)
