"""LSTM over a window, forward and BPTT.

Shape letters: T time, B batch, D input, H hidden. Fused weights Wx (D, 4H), Wh (H, 4H),
b (4H) with gate order [o, i, f, g]: the three sigmoid gates are contiguous (one tanh call
computes all of them, sigmoid(z) = 0.5 tanh(z/2) + 0.5) and i, f, g are contiguous so the
backward pass scales them by dc in one broadcast multiply.

    o, i, f = sigmoid(.), g = tanh(.) of  x_t Wx + h_{t-1} Wh + b
    c_t = f * c_{t-1} + i * g,  h_t = o * tanh(c_t)
"""

from __future__ import annotations

import numpy as np

from .base import Layer


class LSTM(Layer):
    gates = 4
    state_names = ("h", "c")

    def init_params(self, rng, scheme, forget_bias):
        super().init_params(rng, scheme, forget_bias)
        H = self.H
        # Forget bias 1 keeps the cell's memory open early in training (Jozefowicz et al. 2015).
        self.p["b"][2 * H : 3 * H] = forget_bias

    def forward(self, x, state, train=True):
        """x (T, B) ids or (T, B, D), state ((B, H) h0, (B, H) c0) -> out (T, B, H)."""
        T, B = x.shape[:2]
        H = self.H
        f = self.buffers("fwd" if train else "inf", T, B, A=(T, B, 4 * H), Hs=(T + 1, B, H), Cs=(T + 1, B, H),
                         TC=(T, B, H), z=(B, 4 * H), ig=(B, H))
        self.x, self.f = x, f
        self.project(x, f.A.reshape(T * B, 4 * H))
        f.Hs[0], f.Cs[0] = state
        Wh, A, Hs, Cs, TC, z, ig = self.p["Wh"], f.A, f.Hs, f.Cs, f.TC, f.z, f.ig
        for t in range(T):
            a = A[t]
            np.matmul(Hs[t], Wh, out=z)
            a += z
            sig = a[:, : 3 * H]
            sig *= 0.5
            np.tanh(a, out=a)
            sig *= 0.5
            sig += 0.5
            # a now holds [o, i, f, g] activations
            np.multiply(a[:, 2 * H : 3 * H], Cs[t], out=Cs[t + 1])
            np.multiply(a[:, H : 2 * H], a[:, 3 * H :], out=ig)
            Cs[t + 1] += ig
            np.tanh(Cs[t + 1], out=TC[t])
            np.multiply(a[:, :H], TC[t], out=Hs[t + 1])
        return Hs[1:]

    def last_state(self):
        return self.f.Hs[-1].copy(), self.f.Cs[-1].copy()

    def state_grads(self):
        """Gradients of the last backward's initial state (dh0, dc0), for gradient checks."""
        return self.bw.dA[0] @ self.p["Wh"].T, self.bw.carry.copy()

    def backward(self, dout):
        """dout (T, B, H) -> dx (T, B, D) or None; fills gWx, gWh, gb."""
        f = self.f
        T, B, H = dout.shape
        bw = self.buffers("bwd", T, B, P=(T, B, 4 * H), OC=(T, B, H), dA=(T, B, 4 * H),
                          dc=(B, H), carry=(B, H), dx=(T, B, self.D) if not self.onehot else (0,))
        A, P, OC, dA = f.A, bw.P, bw.OC, bw.dA
        o, i, fg, g = A[..., :H], A[..., H : 2 * H], A[..., 2 * H : 3 * H], A[..., 3 * H :]
        # Local derivatives of every step at once, outside the time loop (big vectorised ops):
        # P maps dh (o slot) or dc (i, f, g slots) to the gate pre-activation gradients.
        np.subtract(1.0, A[..., : 3 * H], out=P[..., : 3 * H])
        P[..., : 3 * H] *= A[..., : 3 * H]  # sigmoid' = s (1 - s)
        P[..., :H] *= f.TC  # da_o = dh * tanh(c) * o'
        P[..., H : 2 * H] *= g  # da_i = dc * g * i'
        P[..., 2 * H : 3 * H] *= f.Cs[:-1]  # da_f = dc * c_{t-1} * f'
        np.multiply(g, g, out=P[..., 3 * H :])
        np.subtract(1.0, P[..., 3 * H :], out=P[..., 3 * H :])
        P[..., 3 * H :] *= i  # da_g = dc * i * (1 - g^2)
        np.multiply(f.TC, f.TC, out=OC)
        np.subtract(1.0, OC, out=OC)
        OC *= o  # dc += dh * o * (1 - tanh(c)^2)
        P4, dA4 = P.reshape(T, B, 4, H), dA.reshape(T, B, 4, H)
        WhT, dc, carry = self.recurrent_T(), bw.dc, bw.carry
        carry.fill(0.0)  # truncated BPTT: nothing flows back from beyond the window
        for t in range(T - 1, -1, -1):
            dh = dout[t]
            if t < T - 1:
                dh += np.matmul(dA[t + 1], WhT, out=dc)  # dh_t += da_{t+1} Wh^T (dc as scratch)
            np.multiply(dh, OC[t], out=dc)
            dc += carry
            np.multiply(dh, P4[t, :, 0], out=dA4[t, :, 0])
            np.multiply(P4[t, :, 1:], dc[:, None, :], out=dA4[t, :, 1:])
            np.multiply(dc, fg[t], out=carry)  # dc_{t-1} from c_t = f * c_{t-1} + ...
        dA2 = dA.reshape(T * B, 4 * H)
        np.matmul(f.Hs[:-1].reshape(T * B, H).T, dA2, out=self.g["Wh"])
        self.bw = bw
        return self.project_backward(self.x, dA2, bw.dx)
