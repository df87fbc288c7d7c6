"""GRU over a window, forward and BPTT (the cuDNN/PyTorch variant: reset applied after the
recurrent product, so all three gates share one (3H, H) @ (H, B) GEMM per step).

Shape letters: T time, B batch, D input, H hidden. Wx (3H, D), Wh (3H, H), b (3H), bhn (H);
gate order [r, z, n]:

    r, z = sigmoid(Wx x_t + b + Wh h_{t-1})[r, z]
    n = tanh((Wx x_t + b)[n] + r * ((Wh h_{t-1})[n] + bhn))
    h_t = (1 - z) * n + z * h_{t-1}
"""

from __future__ import annotations

import numpy as np

from .base import Layer


class GRU(Layer):
    gates = 3
    sigmoid_rows = 2

    def param_shapes(self):
        return {**super().param_shapes(), "bhn": (self.H,)}

    def buffer_shapes(self, kind, T, B):
        H = self.H
        if kind == "fwd":
            return dict(PRE=(T, 3 * H, B), A=(T, 3 * H, B), HN=(T, H, B), Hs=(T + 1, H, B), HT=(H, T + 1, B),
                        gh=(3 * H, B), rh=(H, B))
        return dict(Pz=(T, H, B), Pn=(T, H, B), Pr=(T, H, B), dT=(T, H, B), dGt=(T, 3 * H, B), dN=(T, H, B),
                    dh=(H, B), rec=(H, B), dx=self.dx_shape(T, B))

    def forward(self, x, state):
        """x (T, B) ids or (D, T, B), state ((H, B) h0,) -> out (H, T, B)."""
        T, B = self.window_shape(x)
        H = self.H
        f = self.buffers("fwd", T, B)
        self.x, self.f = x, f
        self.project(x, f.PRE)
        f.Hs[0] = state[0]
        Wh, bhn = self.scaled_recurrent(), self.p["bhn"][:, None]
        PRE, A, HN, Hs, gh, rh = f.PRE, f.A, f.HN, f.Hs, f.gh, f.rh
        for t in range(T):
            a, pre = A[t], PRE[t]
            np.matmul(Wh, Hs[t], out=gh)
            rz = a[: 2 * H]
            np.add(pre[: 2 * H], gh[: 2 * H], out=rz)
            np.tanh(rz, out=rz)
            rz *= 0.5
            rz += 0.5  # sigmoid, the 1/2 already folded into the weights
            np.add(gh[2 * H :], bhn, out=HN[t])
            n = a[2 * H :]
            np.multiply(a[:H], HN[t], out=rh)
            np.add(pre[2 * H :], rh, out=n)
            np.tanh(n, out=n)
            h = Hs[t + 1]
            np.subtract(Hs[t], n, out=h)
            h *= a[H : 2 * H]
            h += n  # h = n + z (h_{t-1} - n)
        np.copyto(f.HT, Hs.transpose(1, 0, 2))
        return f.HT[:, 1:]

    def last_state(self):
        return (self.f.Hs[-1].copy(),)

    def state_grads(self):
        """Gradient of the last backward's initial state (dh0,), for gradient checks."""
        return (self.recurrent_T() @ self.bw.dGt[0] + self.bw.rec,)

    def backward(self, dout):
        """dout (H, T, B) -> dx (D, T, B) or None; fills gWx, gWh, gb, gbhn."""
        f = self.f
        H, T, B = dout.shape
        bw = self.buffers("bwd", T, B)
        A = f.A
        r, z, n = A[:, :H], A[:, H : 2 * H], A[:, 2 * H :]
        Pz, Pn, Pr, dGt, dN, dh, rec = bw.Pz, bw.Pn, bw.Pr, bw.dGt, bw.dN, bw.dh, bw.rec
        # Local derivatives of all steps at once, outside the time loop.
        np.subtract(1.0, z, out=Pn)
        np.subtract(f.Hs[:T], n, out=Pz)
        Pz *= z
        Pz *= Pn  # da_z = dh * (h_{t-1} - n) * z (1 - z)
        np.multiply(n, n, out=Pr)
        np.subtract(1.0, Pr, out=Pr)
        Pn *= Pr  # da_n = dh * (1 - z) * (1 - n^2)
        np.subtract(1.0, r, out=Pr)
        Pr *= r
        Pr *= f.HN  # da_r = da_n * hn * r (1 - r)
        np.copyto(bw.dT, dout.transpose(1, 0, 2))
        WhT, dT = self.recurrent_T(), bw.dT
        rec.fill(0.0)  # dh carried from step t+1 (truncated BPTT: zero beyond the window)
        for t in range(T - 1, -1, -1):
            np.add(dT[t], rec, out=dh)
            g, dn = dGt[t], dN[t]
            np.multiply(dh, Pn[t], out=dn)
            np.multiply(dh, Pz[t], out=g[H : 2 * H])
            np.multiply(dn, Pr[t], out=g[:H])
            np.multiply(dn, r[t], out=g[2 * H :])  # d(hn) = da_n * r
            if t:
                np.matmul(WhT, g, out=rec)
                dh *= z[t]
                rec += dh  # dh_{t-1} = dh z + Wh^T [da_r, da_z, d hn]
            else:  # dh_{-1} feeds nothing in the window: keep its cheap part for state_grads
                np.multiply(dh, z[0], out=rec)
        dG = f.PRE.reshape(3 * H, T, B)  # the forward's projection buffer is dead now
        np.copyto(dG, dGt.transpose(1, 0, 2))
        dG2 = dG.reshape(3 * H, T * B)
        np.matmul(dG2, f.HT[:, :T].reshape(H, T * B).T, out=self.g["Wh"])
        np.sum(dG2[2 * H :], axis=1, out=self.g["bhn"])
        np.copyto(dG[2 * H :], dN.transpose(1, 0, 2))  # the projection's gradient has da_n where Wh's had d(hn)
        self.bw = bw
        return self.project_backward(self.x, dG2, bw.dx)
