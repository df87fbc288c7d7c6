"""LSTM over a window, forward and BPTT.

Shape letters: T time, B batch, D input, H hidden. Fused weights Wx (4H, D), Wh (4H, H),
b (4H) with gate order [o, i, f, g]: the three sigmoid gates are contiguous rows (one tanh
over the block computes all four gates) and i, f, g are contiguous so the backward pass
scales them by dc in one broadcast multiply.

    o, i, f = sigmoid(.), g = tanh(.) of  Wx x_t + Wh h_{t-1} + b
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)

Zoneout (Krueger et al. 2016), when on: the two lines above give the new values cn, hn, and
each unit takes its new value only where the step's mask u is 1 (probability 1 - zoneout),
keeping its previous one elsewhere; at inference u is its expectation, 1 - zoneout:

    c_t = c_{t-1} + u_c * (cn_t - c_{t-1}),  cn_t = f * c_{t-1} + i * g
    h_t = h_{t-1} + u_h * (hn_t - h_{t-1}),  hn_t = o * tanh(cn_t)
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

    def __init__(self, input_size, hidden_size, onehot, dtype, recurrent_dropout=0.0, zoneout=(0.0, 0.0)):
        super().__init__(input_size, hidden_size, onehot, dtype, recurrent_dropout)
        self.zoneout = tuple(zoneout)  # (cell, hidden): the share of units that keep their value
        self._zone = None  # (u_c, u_h) this window: (T, H, B) masks (training) or floats; None: off

    def init_params(self, rng, scheme, forget_bias):
        super().init_params(rng, scheme, forget_bias)
        H = self.H
        # Forget bias 1 keeps the cell's memory open early in training (Jozefowicz et al. 2015).
        self.p["b"][2 * H : 3 * H] = forget_bias

    def buffer_shapes(self, kind, T, B):
        H = self.H
        zoned = any(self.zoneout)
        if kind == "fwd":
            return dict(pre=(T, 4 * H, B), gates=(T, 4 * H, B), h=(T + 1, H, B), h_fm=(H, T + 1, B),
                        c=(T + 1, H, B), tanh_c=(T, H, B), ig=(H, B),
                        **(dict(u_c=(T, H, B), u_h=(T, H, B)) if zoned else {}))
        return dict(dh_out=(T, H, B), dh=(H, B), dc=(H, B), dc_next=(H, B), dh_next=(H, B),
                    dx=self.dx_shape(T, B), **(dict(dhn=(H, B), carry_h=(H, B)) if zoned else {}))

    def draw_noise(self, rng, fw, B):
        super().draw_noise(rng, fw, B)
        self._zone = None
        if not any(self.zoneout):
            return
        if rng is None:
            self._zone = tuple(1.0 - z for z in self.zoneout)
            return
        for u, z in zip((fw.u_c, fw.u_h), self.zoneout):
            rng.random(dtype=self.dtype, out=u)
            np.greater_equal(u, z, out=u)  # 1: the unit takes its new value (probability 1 - z)
        self._zone = (fw.u_c, fw.u_h)

    def recur(self, fw, pre):
        H = self.H
        gates, h, c, tanh_c, ig = fw.gates, fw.h, fw.c, fw.tanh_c, fw.ig
        o, i, f, g = gate_views(gates, H)
        m, h_rec = self.recurrent_mask(pre.shape[2])
        add_recurrent = blas.accumulate(self.scaled_recurrent(), h if m is None else h_rec[None], pre)
        zone = self._zone
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
            if zone is not None:
                u_c, u_h = (u if isinstance(u, float) else u[t] for u in zone)
                for s, u in ((c, u_c), (h, u_h)):  # s_t = s_{t-1} + u * (s_new - s_{t-1})
                    s[t + 1] -= s[t]
                    s[t + 1] *= u
                    s[t + 1] += s[t]

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
        if self._zone is not None:
            return self._bptt_zoned(fw, bw, WhT, local4, dc_dh)
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

    def _bptt_zoned(self, fw, bw, WhT, local4, dc_dh):
        """bptt's time loop with zoneout: each step's gradient reaches the new values cn, hn
        through u and the previous state through 1 - u. A loop of its own, so the plain one
        pays nothing for it."""
        T, _, B = fw.gates.shape
        f = gate_views(fw.gates, self.H)[2]  # step t's gates are overwritten by d pre_t after f[t] is read
        d_pre, d_pre4 = fw.gates, fw.gates.reshape(T, 4, self.H, B)
        dh_out, dh, dc, dc_next, dh_next, dhn, carry_h = bw.dh_out, bw.dh, bw.dc, bw.dc_next, bw.dh_next, bw.dhn, bw.carry_h
        m = self._rmask
        for t in range(T - 1, -1, -1):
            u_c, u_h = (u if isinstance(u, float) else u[t] for u in self._zone)
            np.add(dh_out[t], dh_next, out=dh)  # dh_t = from above + from step t+1
            np.multiply(dh, u_h, out=dhn)  # d hn_t
            np.subtract(dh, dhn, out=carry_h)  # h_{t-1}'s share through the units that kept it
            np.multiply(dhn, dc_dh[t], out=dc)
            np.multiply(dc_next, u_c, out=dh)  # dh is dead: it holds c_t's share to cn_t
            dc += dh  # d cn_t = d hn_t o (1 - tanh^2 cn_t) + u_c dc_t
            dc_next -= dh  # dc_{t-1} = (1 - u_c) dc_t ...
            np.multiply(dc, f[t], out=dh)
            dc_next += dh  # ... + f d cn_t
            np.multiply(dhn, local4[t, 0], out=d_pre4[t, 0])  # d pre_o
            np.multiply(local4[t, 1:], dc, out=d_pre4[t, 1:])  # d pre_i, d pre_f, d pre_g
            np.matmul(WhT, d_pre[t], out=dh_next)  # dh_{t-1} = Wh^T d pre_t ...
            if m is not None:
                dh_next *= m  # (through the recurrent-dropout mask)
            dh_next += carry_h  # ... + (1 - u_h) dh_t
        return d_pre, (dh_next, dc_next)
