"""Vanilla RNN over a window, forward and BPTT (Elman; min-char-rnn's Wxh, Whh, bh).

Shape letters: T time, B batch, D input, H hidden. Wx (H, D), Wh (H, H), b (H):

    h_t = act(Wx x_t + Wh h_{t-1} + b),  act tanh or relu
"""

from __future__ import annotations

import numpy as np

from .. import blas
from .base import Layer


class RNN(Layer):
    gates = 1

    def __init__(self, input_size, hidden_size, onehot, dtype, recurrent_dropout=0.0, activation="tanh"):
        super().__init__(input_size, hidden_size, onehot, dtype, recurrent_dropout)
        self.activation = activation

    def buffer_shapes(self, kind, T, B):
        H = self.H
        if kind == "fwd":
            return dict(pre=(T, H, B), h=(T + 1, H, B), h_fm=(H, T + 1, B))
        return dict(d_pre=(T, H, B), dh_out=(T, H, B), dh=(H, B), dh_next=(H, B), dx=self.dx_shape(T, B))

    def recur(self, fw, pre):
        h = fw.h
        act = (lambda v, out: np.maximum(v, 0.0, out=out)) if self.activation == "relu" else np.tanh
        m, h_rec = self.recurrent_mask(pre.shape[2])
        add_recurrent = blas.accumulate(self.p["Wh"], h if m is None else h_rec[None], pre)
        for t in range(pre.shape[0]):
            if m is not None:
                np.multiply(h[t], m, out=h_rec)
            add_recurrent(0 if m is not None else t, t)  # pre_t += Wh h_{t-1}
            act(pre[t], out=h[t + 1])  # h_t = act(Wx x_t + b + Wh h_{t-1})

    def bptt(self, fw, bw):
        h, d_pre, dh, dh_next = fw.h, bw.d_pre, bw.dh, bw.dh_next
        # The local derivative of every step at once, from the post-activation values:
        if self.activation == "relu":
            np.greater(h[1:], 0.0, out=d_pre)  # relu' = [h > 0]
        else:
            np.multiply(h[1:], h[1:], out=d_pre)
            np.subtract(1.0, d_pre, out=d_pre)  # tanh' = 1 - h^2
        WhT, m = self.recurrent_T(), self._rmask
        dh_next.fill(0.0)  # truncated BPTT: nothing flows back from beyond the window
        for t in range(d_pre.shape[0] - 1, -1, -1):
            np.add(bw.dh_out[t], dh_next, out=dh)  # dh_t = from above + from step t+1
            d_pre[t] *= dh  # d pre_t = dh_t * act'
            np.matmul(WhT, d_pre[t], out=dh_next)  # dh_{t-1} = Wh^T d pre_t
            if m is not None:
                dh_next *= m  # through the recurrent-dropout mask
        return d_pre, (dh_next,)
