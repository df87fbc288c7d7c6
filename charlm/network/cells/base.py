"""What every cell shares: parameters bound as views of the model's flat vector, the input
projection and its gradient, per-shape preallocated buffers.

Shape letters: T time, B batch, D input size (V for the one-hot first layer), H hidden,
G = gates * H (LSTM 4H, GRU 3H, RNN H).

Layout: features before batch. Weights are PyTorch-oriented, Wx (G, D), Wh (G, H), b (G,);
a step's activations are one contiguous (G, B) block of a (T, G, B) buffer, so each gate is a
contiguous (H, B) slab and the recurrent product is Wh (G, H) @ h (H, B), the orientation
OpenBLAS runs fastest when B << H. A layer's output sequence is handed on as (H, T, B)
(one bulk transposed copy per window), so the products that do not depend on the
recurrence (weight and input gradients, the head) are single GEMMs on (F, T*B) views.
Per-step work never touches a strided slice, which costs several times a contiguous one
(docs/performance.md, "Why the kernels are as they are", has this and the choices below measured).
"""

from __future__ import annotations

import numpy as np

from .. import blas


class Buffers:
    """Named arrays for one (T, B) window shape, allocated once and reused every step."""

    def __init__(self, dtype, **shapes):
        for name, shape in shapes.items():
            setattr(self, name, np.empty(shape, dtype=dtype))


class Layer:
    """One recurrent layer over a window. A cell (rnn.py, lstm.py, gru.py) supplies its buffers
    (``buffer_shapes``), its time loop (``recur``) and its BPTT loop with its local
    derivatives (``bptt``); everything around them is here.

    forward(x, state, rng=None) -> out (H, T, B); x is (T, B) int ids when ``onehot``, else
    (D, T, B) floats; state is a tuple of (H, B) arrays (``state_names``), read and not
    modified; rng, in training only, draws the window's masks (``draw_noise``).
    backward(dout (H, T, B)) -> (dx (D, T, B) or None for the one-hot layer, dstate: a tuple
    of (H, B) gradients of the initial state); fills ``g``.
    Outputs are views of reused buffers: valid until the next call of the same shape.

    Every cell's forward buffers include ``pre``, room for (T, G, B): the input projection
    Wx x_t + b of every step, to which the time loop adds Wh h_{t-1} in place (``project`` says
    in which layout), ``h`` (T+1, H, B) with h[0] the initial state, and ``h_fm`` (H, T+1, B),
    the same sequence feature-major for the window-wide products.
    """

    gates = 1
    sigmoid_rows = 0  # leading rows of the (G, .) gate block that go through a sigmoid
    state_names: tuple[str, ...] = ("h",)

    def __init__(self, input_size: int, hidden_size: int, onehot: bool, dtype, recurrent_dropout: float = 0.0):
        self.D, self.H, self.onehot = input_size, hidden_size, onehot
        self.dtype = np.dtype(dtype)
        # Variational dropout of the recurrent state (Gal & Ghahramani 2016): in a training
        # window, h_{t-1} enters Wh h_{t-1} times one mask per stream, the same at every step.
        self.recurrent_dropout = recurrent_dropout
        self._rmask: np.ndarray | None = None  # (H, B) this window's mask, scaled by 1/(1-p); None: off
        self.p: dict[str, np.ndarray] = {}
        self.g: dict[str, np.ndarray] = {}
        self._bufs: dict[tuple, Buffers] = {}
        self.frozen = False  # True inside Model.inference(): the weight copies below are current
        # sigmoid(z) = 0.5 tanh(z / 2) + 0.5: the 1/2 is folded into scaled copies of the
        # weights once per window, so each step needs a single tanh over all G rows. A cell
        # without sigmoid gates (the vanilla RNN) uses its weights as they are.
        self._scale = None
        if self.sigmoid_rows:
            self._scale = np.ones(self.gates * hidden_size, self.dtype)
            self._scale[: self.sigmoid_rows * hidden_size] = 0.5

    # ---- parameters -------------------------------------------------------------------
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        G = self.gates * self.H
        return {"Wx": (G, self.D), "Wh": (G, self.H), "b": (G,)}

    def bind(self, params: dict, grads: dict) -> None:
        """Take views of the model's flat parameter and gradient vectors."""
        self.p, self.g = params, grads

    def init_params(self, rng: np.random.Generator, scheme: str, forget_bias: float) -> None:
        """Per gate block: Wx (H, D) and Wh (H, H) by ``init_weights``, biases as it says."""
        H = self.H
        for j in range(self.gates):
            rows = slice(j * H, (j + 1) * H)
            init_weights(rng, scheme, self.p["Wx"][rows], self.p["b"][rows], fan_in=self.D, fan_out=H, hidden=H)
            init_weights(rng, scheme, self.p["Wh"][rows], None, fan_in=H, fan_out=H, hidden=H, recurrent=True)

    def zero_state(self, B: int) -> tuple[np.ndarray, ...]:
        return tuple(np.zeros((self.H, B), self.dtype) for _ in self.state_names)

    # ---- what a cell supplies ---------------------------------------------------------
    def buffer_shapes(self, kind: str, T: int, B: int) -> dict[str, tuple[int, ...]]:
        """Name -> shape of the forward ('fwd') or backward ('bwd') buffers of a (T, B) window:
        a cell declares its cache here, in one place (memory.py sums it without allocating)."""
        raise NotImplementedError

    def scratch_shapes(self, T: int = 1, B: int = 1) -> dict[str, tuple[int, ...]]:
        """Name -> shape of the layer's persistent work arrays (``_scratch``), beside the window
        buffers; the one list memory.py sums. Only the one-hot gradient's depends on the window."""
        G, H, D = self.gates * self.H, self.H, self.D
        shapes = {"_WhT": (H, G)}  # recurrent_T
        if self._scale is not None:
            shapes["_Wh_scaled"] = (G, H)  # scaled_recurrent
        if self._scale is not None or self.onehot:
            shapes["_table"] = (G, D)  # _input_weights
        if self.onehot:
            shapes["_onehot"] = (min(D, T * B), T * B)  # project_backward
        if self.recurrent_dropout > 0:
            shapes["_rmask"] = (H, B)  # draw_noise
            shapes["_h_rec"] = (H, B)  # recurrent_mask
        return shapes

    def recur(self, fw: Buffers, pre: np.ndarray) -> None:
        """The time loop: from the projection pre (T, G, B) (``project``'s view of fw.pre, free
        to be added to) and the initial state in fw.h[0] (and fw.c[0]), fill fw.h[1:] and the
        cell's other sequences."""
        raise NotImplementedError

    def bptt(self, fw: Buffers, bw: Buffers) -> tuple[np.ndarray, tuple]:
        """Backpropagation through the window, from bw.dh_out (T, H, B) (the gradient
        arriving from above at each step) -> (d_pre (T, G, B), the gradient of each step's
        pre-activations; dstate, the gradients of the initial state)."""
        raise NotImplementedError

    def fix_projection_grad(self, d_pre: np.ndarray, bw: Buffers) -> None:
        """Between the Wh gradient and the projection's: for a cell whose recurrent and input
        pre-activations get different gradients (the GRU's candidate). Default: the same."""

    def draw_noise(self, rng: np.random.Generator | None, fw: Buffers, B: int) -> None:
        """The window's random masks from ``rng`` (training), or none (inference, rng None):
        here the recurrent-dropout mask."""
        self._rmask = None
        p = self.recurrent_dropout
        if rng is not None and p > 0:
            self._rmask = dropout_mask(rng, p, self._scratch("_rmask", 1, B))

    def recurrent_mask(self, B: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(this window's recurrent-dropout mask (H, B), a work array for m * h_{t-1}), or
        (None, None) without it. The time loops test for None inline: a method call per step
        would cost a small model more than the mask does (min-char-rnn's row, 4%)."""
        if self._rmask is None:
            return None, None
        return self._rmask, self._scratch("_h_rec", 1, B)

    # ---- forward and backward ---------------------------------------------------------
    def forward(self, x, state, rng: np.random.Generator | None = None):
        T, B = self.window_shape(x)
        fw = self.buffers("fwd", T, B)
        self.x, self.fw = x, fw
        self.draw_noise(rng, fw, B)
        pre = self.project(x, fw.pre)
        for name, s in zip(self.state_names, state):
            getattr(fw, name)[0] = s
        self.recur(fw, pre)
        np.copyto(fw.h_fm, fw.h.transpose(1, 0, 2))  # one bulk transpose for the window-wide GEMMs
        return fw.h_fm[:, 1:]

    def last_state(self) -> tuple[np.ndarray, ...]:
        return tuple(getattr(self.fw, name)[-1].copy() for name in self.state_names)

    def backward(self, dout):
        fw = self.fw
        H, T, B = dout.shape
        bw = self.buffers("bwd", T, B)
        np.copyto(bw.dh_out, dout.transpose(1, 0, 2))
        d_pre_steps, dstate = self.bptt(fw, bw)
        G = self.gates * H
        d_pre = fw.pre.reshape(G, T, B)  # dead once bptt returns: holds d_pre feature-major now
        np.copyto(d_pre, d_pre_steps.transpose(1, 0, 2))
        d_pre2 = d_pre.reshape(G, T * B)
        h_prev = fw.h_fm[:, :T]
        if self._rmask is not None:
            # The inputs Wh saw; in place, because the layer's output (h_fm[:, 1:]) is dead now:
            # the layers above and the head already have their gradients.
            h_prev *= self._rmask[:, None, :]
        np.matmul(d_pre2, h_prev.reshape(H, T * B).T, out=self.g["Wh"])  # dWh = sum_t d_pre_t h_{t-1}^T
        self.fix_projection_grad(d_pre, bw)
        return self.project_backward(self.x, d_pre2, bw.dx), dstate

    # ---- pieces shared by forward and backward ----------------------------------------
    @staticmethod
    def window_shape(x: np.ndarray) -> tuple[int, int]:
        """(T, B) of an input: ids (T, B) or features (D, T, B)."""
        return x.shape if x.ndim == 2 else x.shape[1:]

    def dx_shape(self, T: int, B: int) -> tuple[int, ...]:
        return (0,) if self.onehot else (self.D, T, B)

    def buffers(self, kind: str, T: int, B: int) -> Buffers:
        """The ``kind`` buffers for a (T, B) window, allocated on first use; the two most
        recently used shapes per kind are kept (training and evaluation windows)."""
        return cached_buffers(self._bufs, (kind, T, B), lambda: Buffers(self.dtype, **self.buffer_shapes(kind, T, B)))

    def _scratch(self, name: str, T: int = 1, B: int = 1, zeros: bool = False) -> np.ndarray:
        """The persistent work array ``name`` of ``scratch_shapes`` (reallocated only when its
        shape changes)."""
        shape = self.scratch_shapes(T, B)[name]
        a = self.__dict__.get(name)
        if a is None or a.shape != tuple(shape):
            a = (np.zeros if zeros else np.empty)(shape, self.dtype)
            self.__dict__[name] = a
        return a

    def scaled_recurrent(self) -> np.ndarray:
        """Wh with its sigmoid rows halved (G, H), refreshed at each forward unless frozen."""
        if self._scale is None:
            return self.p["Wh"]
        W = self._scratch("_Wh_scaled")
        if not self.frozen:
            np.multiply(self.p["Wh"], self._scale[:, None], out=W)
        return W

    def freeze(self, frozen: bool = True) -> None:
        """Compute the forward's weight copies once and reuse them until unfrozen (inference:
        at batch 1 refreshing them per character would cost more than the step itself)."""
        self.frozen = False
        if frozen:
            self.scaled_recurrent()
            self._input_weights()
        self.frozen = frozen

    def _input_weights(self) -> np.ndarray:
        """The projection's table, scale * (Wx + b) (one-hot), or scale * Wx (dense)."""
        if self._scale is None and not self.onehot:
            return self.p["Wx"]
        W = self._scratch("_table")
        if not self.frozen:
            if self.onehot:
                np.add(self.p["Wx"], self.p["b"][:, None], out=W)
                if self._scale is not None:
                    W *= self._scale[:, None]
            else:
                np.multiply(self.p["Wx"], self._scale[:, None], out=W)
        return W

    def recurrent_T(self) -> np.ndarray:
        """A C-contiguous copy of Wh^T (H, G), refreshed at each backward: OpenBLAS runs the
        per-step (H, G) @ (G, B) product faster on it than on the transposed view."""
        W = self._scratch("_WhT")
        transpose_into(W, self.p["Wh"])
        return W

    def project(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Fill out (room for T*G*B) with scale * (Wx x_t + b) for every step -> a (T, G, B)
        view of it; each step's (G, B) block has contiguous rows, as the time loop needs.

        One-hot x (T, B): a column gather from (Wx + b) per step into out as (T, G, B) (each
        one-hot column has a single 1, so the bias folds into the table). mode="wrap" because
        ids are always in range and numpy's wrap loop is the fastest of its modes. Dense x (D, T, B): the bias, then one GEMM over all T*B columns added to it,
        into out as (G, T, B); the view is its transpose, so step t's block is a strided slice
        that the time loop's GEMM adds to and reads in place, which beat one GEMM into a
        feature-major work buffer and a transposing add into (T, G, B).
        """
        T, G, B = out.shape
        W = self._input_weights()
        if self.onehot:
            for t in range(T):
                np.take(W, x[t], axis=1, out=out[t], mode="wrap")
            return out
        fm = out.reshape(G, T * B)
        b = self.p["b"] if self._scale is None else self.p["b"] * self._scale
        np.copyto(fm, b[:, None])
        blas.matmul_add(W, x.reshape(self.D, T * B), fm)
        return fm.reshape(G, T, B).transpose(1, 0, 2)

    def project_backward(self, x: np.ndarray, dA: np.ndarray, dx: np.ndarray | None):
        """dA (G, T*B) gradient of the pre-activations -> fills gWx, gb; returns dx (D, T, B)."""
        if self.onehot:
            # d Wx = dA onehot(x)^T (10x cheaper than np.add.at), with the one-hot over only the
            # U distinct ids of the window, found in O(N) by a bincount: a large vocabulary
            # costs no more than the window has distinct characters.
            ids = x.reshape(-1)
            N = ids.shape[0]
            present = np.flatnonzero(np.bincount(ids, minlength=self.D))
            lut = np.empty(self.D, np.intp)
            lut[present] = np.arange(len(present))
            rows = lut[ids]
            onehot = self._scratch("_onehot", N, 1, zeros=True)[: len(present)]
            onehot[rows, np.arange(N)] = 1.0
            self.g["Wx"].fill(0.0)
            self.g["Wx"][:, present] = np.matmul(dA, onehot.T)
            onehot[rows, np.arange(N)] = 0.0  # leave the buffer all zeros for the next window
            # Every column of dA is one id's: gWx's columns already sum them by id, so the
            # bias, which every column feeds, takes the sum of gWx's (V columns, not T*B).
            np.sum(self.g["Wx"], axis=1, out=self.g["b"])
            return None
        row_sums(dA, out=self.g["b"])
        T, B = x.shape[1:]
        x2 = x.reshape(self.D, T * B)
        np.matmul(dA, x2.T, out=self.g["Wx"])
        # No contiguous copy of Wx^T here: for a product this large OpenBLAS is as fast on the view.
        np.matmul(self.p["Wx"].T, dA, out=dx.reshape(self.D, T * B))
        return dx


def dropout_mask(rng: np.random.Generator, p: float, out: np.ndarray) -> np.ndarray:
    """Fill ``out`` with an inverted-dropout mask and return it: 0 with probability p, else
    1/(1 - p), so nothing is rescaled at inference. One draw of ``out.size`` uniforms in
    ``out``'s dtype: benchmarks.quality replays a trainer's masks through it for PyTorch."""
    rng.random(dtype=out.dtype, out=out)
    np.greater_equal(out, p, out=out)
    out *= 1.0 / (1.0 - p)
    return out


def row_sums(A: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out (n,) = the sum of each row of A (n, N), as the product A @ 1: OpenBLAS's GEMV is
    several times faster than np.sum(axis=1) on these shapes."""
    return np.matmul(A, np.ones(A.shape[1], A.dtype), out=out)


def transpose_into(dst: np.ndarray, src: np.ndarray) -> None:
    """dst (n, m) = src (m, n)^T, in bands of src rows that fit the L1 cache: one strided copy
    of a large matrix misses the cache on nearly every write."""
    rows = max(8, min(64, 8192 // src.shape[1]))  # a band of src is ~32 KB of float32
    for r in range(0, src.shape[0], rows):
        np.copyto(dst[:, r : r + rows], src[r : r + rows].T)


def cached_buffers(cache: dict, key: tuple, make, keep: int = 2):
    """Least-recently-used cache of buffer sets, ``keep`` per kind (key[0])."""
    buf = cache.pop(key, None)
    if buf is None:
        same_kind = [k for k in cache if k[0] == key[0]]
        for k in same_kind[: max(0, len(same_kind) - keep + 1)]:
            del cache[k]
        buf = make()
    cache[key] = buf  # most recently used last
    return buf


def init_weights(rng: np.random.Generator, scheme: str, W: np.ndarray, b: np.ndarray | None, fan_in: int,
                 fan_out: int, hidden: int, recurrent: bool = False) -> None:
    """Fill W (fan_out, fan_in) and its bias b in place; the one init path for cells and head.

    xavier: Glorot-uniform, orthogonal when recurrent, zero bias. he: N(0, 2/fan_in) (Kaiming:
    keeps a relu layer's activations at the same scale), zero bias. uniform: U(-k, k) with
    k = 1/sqrt(hidden) for weights and bias (PyTorch's nn.RNN/LSTM/GRU and its Linear head, whose
    fan_in is the hidden size).
    """
    if scheme == "uniform":
        k = 1.0 / np.sqrt(hidden)
        W[...] = rng.uniform(-k, k, W.shape)
        if b is not None:
            b[...] = rng.uniform(-k, k, b.shape)
        return
    if scheme == "he":
        W[...] = rng.standard_normal(W.shape) * np.sqrt(2.0 / fan_in)
    elif recurrent:
        W[...] = orthogonal(rng, W.shape[0])
    else:
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        W[...] = rng.uniform(-limit, limit, W.shape)
    if b is not None:
        b[...] = 0.0


def orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random (n, n) orthogonal matrix: recurrent products then neither grow nor shrink a
    state at init, which keeps early BPTT gradients from vanishing or exploding."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))
