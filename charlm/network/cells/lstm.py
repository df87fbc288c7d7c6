"""LSTM over a window, forward and BPTT.

Shape letters: T time, B batch, D input, H hidden. Fused weights Wx (4H, D), Wh (4H, H),
b (4H) with gate order [o, i, f, g]: the three sigmoid gates are contiguous rows (one tanh
over the block computes all four gates) and i, f, g are contiguous so the backward pass
scales them by dc in one broadcast multiply.

    o, i, f = sigmoid(.), g = tanh(.) of  Wx x_t + Wh h_{t-1} + b
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)
"""

from __future__ import annotations

import numpy as np

from .. import blas
from .base import Layer


def gate_views(a, H):
    """(T, 4H, B) -> the o, i, f, g row blocks, each (T, H, B); a[t] of each is contiguous."""
    return a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]


class LSTM(Layer):
    gates = 4
    sigmoid_rows = 3
    state_names = ("h", "c")

    def init_params(self, rng, scheme, forget_bias):
        super().init_params(rng, scheme, forget_bias)
        H = self.H
        # Forget bias 1 keeps the cell's memory open early in training (Jozefowicz et al. 2015).
        self.p["b"][2 * H : 3 * H] = forget_bias

    def buffer_shapes(self, kind, T, B):
        H = self.H
        if kind == "fwd":
            return dict(pre=(T, 4 * H, B), gates=(T, 4 * H, B), h=(T + 1, H, B), h_fm=(H, T + 1, B),
                        c=(T + 1, H, B), tanh_c=(T, H, B), ig=(H, B))
        return dict(dh_out=(T, H, B), dh=(H, B), dc=(H, B), dc_next=(H, B), dh_next=(H, B),
                    dx=self.dx_shape(T, B))

    def recur(self, fw, pre):
        H = self.H
        gates, h, c, tanh_c, ig = fw.gates, fw.h, fw.c, fw.tanh_c, fw.ig
        o, i, f, g = gate_views(gates, H)
        m, h_rec = self.recurrent_mask(pre.shape[2])
        add_recurrent = blas.accumulate(self.scaled_recurrent(), h if m is None else h_rec[None], pre)
        for t in range(pre.shape[0]):
            if m is not None:
                np.multiply(h[t], m, out=h_rec)
            add_recurrent(0 if m is not None else t, t)  # pre_t += Wh h_{t-1}
            a = gates[t]
            np.tanh(pre[t], out=a)
            sig = a[: 3 * H]
            sig *= 0.5
            sig += 0.5  # o, i, f = sigmoid (its 1/2 folded into the weights); g = tanh
            np.multiply(f[t], c[t], out=c[t + 1])
            np.multiply(i[t], g[t], out=ig)
            c[t + 1] += ig  # c_t = f * c_{t-1} + i * g
            np.tanh(c[t + 1], out=tanh_c[t])
            np.multiply(o[t], tanh_c[t], out=h[t + 1])  # h_t = o * tanh(c_t)

    def bptt(self, fw, bw):
        H = self.H
        T, _, B = fw.gates.shape
        gates, c, tanh_c = fw.gates, fw.c, fw.tanh_c
        o, i, f, g = gate_views(gates, H)
        # Local derivatives of every step at once, outside the time loop (big vectorised ops).
        # local maps dh (o rows) or dc (i, f, g rows) to the gradient of each pre-activation.
        local = fw.pre  # the pre-activations are dead after the forward pass: it holds these now
        lo, li, lf, lg = gate_views(local, H)
        np.subtract(1.0, gates[:, : 3 * H], out=local[:, : 3 * H])
        local[:, : 3 * H] *= gates[:, : 3 * H]  # sigmoid' = s (1 - s)
        lo *= tanh_c  # d pre_o = dh * tanh(c) * o'
        li *= g  # d pre_i = dc * g * i'
        lf *= c[:-1]  # d pre_f = dc * c_{t-1} * f'
        np.multiply(g, g, out=lg)
        np.subtract(1.0, lg, out=lg)
        lg *= i  # d pre_g = dc * i * (1 - g^2)
        dc_dh = tanh_c  # dead once lo has used it: holds o * (1 - tanh(c)^2), dc_t's share of dh_t
        np.multiply(tanh_c, tanh_c, out=dc_dh)
        np.subtract(1.0, dc_dh, out=dc_dh)
        dc_dh *= o
        # Step t's gates are dead once f[t] has been read: they are overwritten by d pre_t.
        d_pre = gates
        local4, d_pre4 = local.reshape(T, 4, H, B), d_pre.reshape(T, 4, H, B)
        WhT, dh_out, dh, dc, dc_next, dh_next = self.recurrent_T(), bw.dh_out, bw.dh, bw.dc, bw.dc_next, bw.dh_next
        m = self._rmask
        dc_next.fill(0.0)  # truncated BPTT: nothing flows back from beyond the window
        dh_next.fill(0.0)
        for t in range(T - 1, -1, -1):
            np.add(dh_out[t], dh_next, out=dh)  # dh_t = from above + from step t+1
            np.multiply(dh, dc_dh[t], out=dc)
            dc += dc_next  # dc_t = dh_t o (1 - tanh^2 c_t) + dc_{t+1} f_{t+1}
            np.multiply(dc, f[t], out=dc_next)  # dc_{t-1}'s share from c_t = f * c_{t-1} + ...
            np.multiply(dh, local4[t, 0], out=d_pre4[t, 0])  # d pre_o
            np.multiply(local4[t, 1:], dc, out=d_pre4[t, 1:])  # d pre_i, d pre_f, d pre_g
            np.matmul(WhT, d_pre[t], out=dh_next)  # dh_{t-1} = Wh^T d pre_t
            if m is not None:
                dh_next *= m  # through the recurrent-dropout mask
        return d_pre, (dh_next, dc_next)
