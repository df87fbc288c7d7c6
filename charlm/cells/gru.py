"""GRU over a window, forward and BPTT (the cuDNN/PyTorch variant: reset applied after the
recurrent product, so all three gates share one (B, H) x (H, 3H) GEMM per step).

Shape letters: T time, B batch, D input, H hidden. Wx (D, 3H), Wh (H, 3H), b (3H), bhn (H);
gate order [r, z, n]:

    r, z = sigmoid(x_t Wx + b + h_{t-1} Wh)[r, z]
    n = tanh((x_t Wx + b)[n] + r * (h_{t-1} Wh[n] + bhn))
    h_t = (1 - z) * n + z * h_{t-1}
"""

from __future__ import annotations

import numpy as np

from .base import Layer


class GRU(Layer):
    gates = 3

    def param_shapes(self):
        return {**super().param_shapes(), "bhn": (self.H,)}

    def forward(self, x, state, train=True):
        """x (T, B) ids or (T, B, D), state ((B, H) h0,) -> out (T, B, H)."""
        T, B = x.shape[:2]
        H = self.H
        f = self.buffers("fwd" if train else "inf", T, B, A=(T, B, 3 * H), HN=(T, B, H), Hs=(T + 1, B, H), gh=(B, 3 * H), rh=(B, H))
        self.x, self.f = x, f
        self.project(x, f.A.reshape(T * B, 3 * H))
        f.Hs[0] = state[0]
        Wh, bhn, A, HN, Hs, gh, rh = self.p["Wh"], self.p["bhn"], f.A, f.HN, f.Hs, f.gh, f.rh
        for t in range(T):
            a = A[t]
            np.matmul(Hs[t], Wh, out=gh)
            rz = a[:, : 2 * H]
            rz += gh[:, : 2 * H]
            rz *= 0.5
            np.tanh(rz, out=rz)
            rz *= 0.5
            rz += 0.5  # sigmoid(v) = 0.5 tanh(v/2) + 0.5
            np.add(gh[:, 2 * H :], bhn, out=HN[t])
            n = a[:, 2 * H :]
            n += np.multiply(a[:, :H], HN[t], out=rh)
            np.tanh(n, out=n)
            h = Hs[t + 1]
            np.subtract(Hs[t], n, out=h)
            h *= a[:, H : 2 * H]
            h += n  # h = n + z (h_{t-1} - n)
        return Hs[1:]

    def last_state(self):
        return (self.f.Hs[-1].copy(),)

    def state_grads(self):
        """Gradient of the last backward's initial state (dh0,), for gradient checks."""
        return (self.bw.dhn.copy(),)

    def backward(self, dout):
        """dout (T, B, H) -> dx (T, B, D) or None; fills gWx, gWh, gb, gbhn."""
        f = self.f
        T, B, H = dout.shape
        bw = self.buffers("bwd", T, B, Pz=(T, B, H), Pn=(T, B, H), Pr=(T, B, H), dG=(T, B, 3 * H),
                          dN=(T, B, H), dhn=(B, H), dx=(T, B, self.D) if not self.onehot else (0,))
        A, Hs = f.A, f.Hs
        r, z, n = A[..., :H], A[..., H : 2 * H], A[..., 2 * H :]
        Pz, Pn, Pr, dG, dN, dhn = bw.Pz, bw.Pn, bw.Pr, bw.dG, bw.dN, bw.dhn
        # Local derivatives of all steps at once, outside the time loop.
        np.subtract(1.0, z, out=Pn)
        np.subtract(Hs[:-1], n, out=Pz)
        Pz *= z
        Pz *= Pn  # da_z = dh * (h_{t-1} - n) * z (1 - z)
        np.multiply(n, n, out=Pr)
        np.subtract(1.0, Pr, out=Pr)
        Pn *= Pr  # da_n = dh * (1 - z) * (1 - n^2)
        np.subtract(1.0, r, out=Pr)
        Pr *= r
        Pr *= f.HN  # da_r = da_n * hn * r (1 - r)
        WhT = self.recurrent_T()
        dhn.fill(0.0)  # carried dh from step t+1 (truncated BPTT: zero beyond the window)
        for t in range(T - 1, -1, -1):
            dh = dout[t]
            dh += dhn
            g = dG[t]
            np.multiply(dh, Pn[t], out=dN[t])
            np.multiply(dh, Pz[t], out=g[:, H : 2 * H])
            np.multiply(dN[t], Pr[t], out=g[:, :H])
            np.multiply(dN[t], r[t], out=g[:, 2 * H :])  # d(hn) = da_n * r
            np.matmul(g, WhT, out=dhn)
            dh *= z[t]
            dhn += dh  # dh_{t-1} = dh z + [da_r, da_z, d hn] Wh^T
        dG2 = dG.reshape(T * B, 3 * H)
        np.matmul(Hs[:-1].reshape(T * B, H).T, dG2, out=self.g["Wh"])
        np.sum(dG2[:, 2 * H :], axis=0, out=self.g["bhn"])
        dG[..., 2 * H :] = dN  # the projection's gradient has da_n where Wh's had d(hn)
        self.bw = bw
        return self.project_backward(self.x, dG2, bw.dx)
