"""GRU over a window, forward and BPTT (the cuDNN/PyTorch variant: reset applied after the
recurrent product, so all three gates share one (3H, H) @ (H, B) GEMM per step).

Shape letters: T time, B batch, D input, H hidden. Wx (3H, D), Wh (3H, H), b (3H), bhn (H);
gate order [r, z, n]:

    r, z = sigmoid(Wx x_t + b + Wh h_{t-1})[r, z]
    hn   = (Wh h_{t-1})[n] + bhn
    n    = tanh((Wx x_t + b)[n] + r * hn)
    h_t  = (1 - z) * n + z * h_{t-1}
"""

from __future__ import annotations

import numpy as np

from .base import Layer, row_sums


def gate_views(a, H):
    """(T, 3H, B) -> the r, z, n row blocks, each (T, H, B); a[t] of each is contiguous."""
    return a[:, :H], a[:, H : 2 * H], a[:, 2 * H :]


class GRU(Layer):
    gates = 3
    sigmoid_rows = 2

    def param_shapes(self):
        return {**super().param_shapes(), "bhn": (self.H,)}

    def buffer_shapes(self, kind, T, B):
        H = self.H
        if kind == "fwd":
            return dict(pre=(T, 3 * H, B), gates=(T, 3 * H, B), hn=(T, H, B), h=(T + 1, H, B),
                        h_fm=(H, T + 1, B), gh=(3 * H, B), rh=(H, B))
        return dict(local_z=(T, H, B), local_n=(T, H, B), local_r=(T, H, B), dh_out=(T, H, B),
                    d_pre=(T, 3 * H, B), d_pre_n=(T, H, B), dh=(H, B), dh_next=(H, B), dx=self.dx_shape(T, B))

    def recur(self, fw, pre):
        H = self.H
        Wh, bhn = self.scaled_recurrent(), self.p["bhn"][:, None]
        gates, hn, h, gh, rh = fw.gates, fw.hn, fw.h, fw.gh, fw.rh
        r, z, n = gate_views(gates, H)
        m, h_rec = self.recurrent_mask(pre.shape[2])
        for t in range(pre.shape[0]):
            np.matmul(Wh, h[t] if m is None else np.multiply(h[t], m, out=h_rec), out=gh)  # all three gates' recurrent products at once
            rz = gates[t, : 2 * H]
            np.add(pre[t, : 2 * H], gh[: 2 * H], out=rz)
            np.tanh(rz, out=rz)
            rz *= 0.5
            rz += 0.5  # r, z = sigmoid (its 1/2 folded into the weights)
            np.add(gh[2 * H :], bhn, out=hn[t])  # hn = (Wh h_{t-1})[n] + bhn
            np.multiply(r[t], hn[t], out=rh)
            np.add(pre[t, 2 * H :], rh, out=n[t])
            np.tanh(n[t], out=n[t])  # n = tanh((Wx x_t + b)[n] + r * hn)
            np.subtract(h[t], n[t], out=h[t + 1])
            h[t + 1] *= z[t]
            h[t + 1] += n[t]  # h_t = n + z (h_{t-1} - n) = (1 - z) n + z h_{t-1}

    def bptt(self, fw, bw):
        H = self.H
        T = fw.gates.shape[0]
        r, z, n = gate_views(fw.gates, H)
        local_z, local_n, local_r = bw.local_z, bw.local_n, bw.local_r
        # Local derivatives of all steps at once, outside the time loop.
        np.subtract(1.0, z, out=local_n)
        np.subtract(fw.h[:T], n, out=local_z)
        local_z *= z
        local_z *= local_n  # d pre_z = dh * (h_{t-1} - n) * z (1 - z)
        np.multiply(n, n, out=local_r)
        np.subtract(1.0, local_r, out=local_r)
        local_n *= local_r  # d pre_n = dh * (1 - z) * (1 - n^2)
        np.subtract(1.0, r, out=local_r)
        local_r *= r
        local_r *= fw.hn  # d pre_r = d pre_n * hn * r (1 - r)
        # d_pre's n rows hold d hn = d pre_n * r, the gradient of the recurrent product's n
        # rows; the projection's n rows get d pre_n itself (d_pre_n, see fix_projection_grad).
        d_pre, d_pre_n = bw.d_pre, bw.d_pre_n
        d_r, d_z, d_hn = gate_views(d_pre, H)
        WhT, dh_out, dh, dh_next, m = self.recurrent_T(), bw.dh_out, bw.dh, bw.dh_next, self._rmask
        dh_next.fill(0.0)  # truncated BPTT: nothing flows back from beyond the window
        for t in range(T - 1, -1, -1):
            np.add(dh_out[t], dh_next, out=dh)  # dh_t = from above + from step t+1
            np.multiply(dh, local_n[t], out=d_pre_n[t])
            np.multiply(dh, local_z[t], out=d_z[t])
            np.multiply(d_pre_n[t], local_r[t], out=d_r[t])
            np.multiply(d_pre_n[t], r[t], out=d_hn[t])
            np.matmul(WhT, d_pre[t], out=dh_next)
            if m is not None:
                dh_next *= m  # through the recurrent-dropout mask (z's path to h_{t-1} has none)
            dh *= z[t]
            dh_next += dh  # dh_{t-1} = z dh_t + Wh^T [d pre_r, d pre_z, d hn]
        return d_pre, (dh_next,)

    def fix_projection_grad(self, d_pre, bw):
        """d_pre (3H, T, B): its n rows have served dWh; bhn takes their sum, and the
        projection (Wx, b) gets d pre_n instead."""
        H = self.H
        T, B = d_pre.shape[1:]
        row_sums(d_pre[2 * H :].reshape(H, T * B), out=self.g["bhn"])
        np.copyto(d_pre[2 * H :], bw.d_pre_n.transpose(1, 0, 2))
