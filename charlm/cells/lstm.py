"""LSTM over a window, forward and BPTT.

Shape letters: T time, B batch, D input, H hidden. Fused weights Wx (4H, D), Wh (4H, H),
b (4H) with gate order [o, i, f, g]: the three sigmoid gates are contiguous rows (one tanh
over the block computes all four gates) and i, f, g are contiguous so the backward pass
scales them by dc in one broadcast multiply.

    o, i, f = sigmoid(.), g = tanh(.) of  Wx x_t + Wh h_{t-1} + b
    c_t = f * c_{t-1} + i * g,  h_t = o * tanh(c_t)
"""

from __future__ import annotations

import numpy as np

from .base import Layer


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
            return dict(PRE=(T, 4 * H, B), A=(T, 4 * H, B), Hs=(T + 1, H, B), HT=(H, T + 1, B), Cs=(T + 1, H, B),
                        TC=(T, H, B), ig=(H, B))
        return dict(dT=(T, H, B), dh=(H, B), dc=(H, B), carry=(H, B), rec=(H, B), dx=self.dx_shape(T, B))

    def forward(self, x, state):
        """x (T, B) ids or (D, T, B), state ((H, B) h0, (H, B) c0) -> out (H, T, B)."""
        T, B = self.window_shape(x)
        H = self.H
        f = self.buffers("fwd", T, B)
        self.x, self.f = x, f
        self.project(x, f.PRE)
        f.Hs[0], f.Cs[0] = state
        Wh, PRE, A, Hs, Cs, TC, ig = self.scaled_recurrent(), f.PRE, f.A, f.Hs, f.Cs, f.TC, f.ig
        for t in range(T):
            a = A[t]
            np.matmul(Wh, Hs[t], out=a)
            a += PRE[t]
            np.tanh(a, out=a)
            sig = a[: 3 * H]
            sig *= 0.5
            sig += 0.5  # a now holds [o, i, f, g]
            np.multiply(a[2 * H : 3 * H], Cs[t], out=Cs[t + 1])
            np.multiply(a[H : 2 * H], a[3 * H :], out=ig)
            Cs[t + 1] += ig
            np.tanh(Cs[t + 1], out=TC[t])
            np.multiply(a[:H], TC[t], out=Hs[t + 1])
        np.copyto(f.HT, Hs.transpose(1, 0, 2))
        return f.HT[:, 1:]

    def last_state(self):
        return self.f.Hs[-1].copy(), self.f.Cs[-1].copy()

    def state_grads(self):
        """Gradients of the last backward's initial state (dh0, dc0), for gradient checks."""
        return self.recurrent_T() @ self.f.A[0], self.bw.carry.copy()

    def backward(self, dout):
        """dout (H, T, B) -> dx (D, T, B) or None; fills gWx, gWh, gb."""
        f = self.f
        H, T, B = dout.shape
        bw = self.buffers("bwd", T, B)
        # Dead forward buffers are reused: the projection holds P during the loop and dA after
        # it, tanh(c) becomes OC once P has used it, and each step's activations are
        # overwritten by that step's gradients (the forget gate is read first).
        A, P, OC, dAt = f.A, f.PRE, f.TC, f.A
        o, i, fg, g = A[:, :H], A[:, H : 2 * H], A[:, 2 * H : 3 * H], A[:, 3 * H :]
        # Local derivatives of every step at once, outside the time loop (big vectorised ops):
        # P maps dh (o rows) or dc (i, f, g rows) to the gate pre-activation gradients.
        np.subtract(1.0, A[:, : 3 * H], out=P[:, : 3 * H])
        P[:, : 3 * H] *= A[:, : 3 * H]  # sigmoid' = s (1 - s)
        P[:, :H] *= f.TC  # da_o = dh * tanh(c) * o'
        P[:, H : 2 * H] *= g  # da_i = dc * g * i'
        P[:, 2 * H : 3 * H] *= f.Cs[:-1]  # da_f = dc * c_{t-1} * f'
        np.multiply(g, g, out=P[:, 3 * H :])
        np.subtract(1.0, P[:, 3 * H :], out=P[:, 3 * H :])
        P[:, 3 * H :] *= i  # da_g = dc * i * (1 - g^2)
        np.multiply(f.TC, f.TC, out=OC)
        np.subtract(1.0, OC, out=OC)
        OC *= o  # dc += dh * o * (1 - tanh(c)^2)
        np.copyto(bw.dT, dout.transpose(1, 0, 2))
        P4, dA4, dT = P.reshape(T, 4, H, B), dAt.reshape(T, 4, H, B), bw.dT
        WhT, dh, dc, carry, rec = self.recurrent_T(), bw.dh, bw.dc, bw.carry, bw.rec
        carry.fill(0.0)  # truncated BPTT: nothing flows back from beyond the window
        rec.fill(0.0)
        for t in range(T - 1, -1, -1):
            np.add(dT[t], rec, out=dh)  # dh_t = from above + Wh^T da_{t+1}
            np.multiply(dh, OC[t], out=dc)
            dc += carry
            np.multiply(dc, fg[t], out=carry)  # dc_{t-1} from c_t = f * c_{t-1} + ...
            np.multiply(dh, P4[t, 0], out=dA4[t, 0])
            np.multiply(P4[t, 1:], dc, out=dA4[t, 1:])
            if t:
                np.matmul(WhT, dAt[t], out=rec)
        dA = f.PRE.reshape(4 * H, T, B)
        np.copyto(dA, dAt.transpose(1, 0, 2))
        dA2 = dA.reshape(4 * H, T * B)
        np.matmul(dA2, f.HT[:, :T].reshape(H, T * B).T, out=self.g["Wh"])
        self.bw = bw
        return self.project_backward(self.x, dA2, bw.dx)
