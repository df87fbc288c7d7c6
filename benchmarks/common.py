"""Shared set-up: thread count (set before NumPy loads BLAS), the corpus, PyTorch twins."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def set_threads(argv=None) -> int:
    """Read --threads N from argv and pin BLAS/OpenMP pools before numpy or torch is imported."""
    argv = sys.argv if argv is None else argv
    n = 2
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            n = int(argv[i + 1])
        elif a.startswith("--threads="):
            n = int(a.split("=", 1)[1])
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    return n


SHAKESPEARE = Path(os.environ.get("CHARLM_SHAKESPEARE") or ROOT / "data" / "tinyshakespeare.txt")


def corpus_path() -> Path:
    """The tiny-Shakespeare corpus shipped in data/ ($CHARLM_SHAKESPEARE overrides it)."""
    if not SHAKESPEARE.is_file():
        sys.exit(f"corpus {SHAKESPEARE} not found: restore data/tinyshakespeare.txt or set CHARLM_SHAKESPEARE")
    return SHAKESPEARE


def have_torch() -> bool:
    try:
        import torch  # noqa: F401

        return True
    except ImportError:
        return False


def machine_info() -> dict:
    import platform

    import numpy as np

    from charlm.network.blas import core

    cpu = platform.processor() or "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    blas = "unknown"
    try:
        cfg = np.show_config(mode="dicts")
        b = cfg["Build Dependencies"]["blas"]
        blas = f"{b.get('name')} {b.get('version')}"
    except Exception:  # older NumPy has no mode="dicts"; the name is informative only
        pass
    info = {"cpu": cpu, "numpy": np.__version__, "blas": blas, "blas_core": core(),
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"), "python": platform.python_version()}
    if have_torch():
        import torch

        info["torch"] = torch.__version__
    return info


class TorchTwin:
    """nn.LSTM/GRU/RNN + nn.Linear with cross-entropy, clip_grad_norm_ and Adam (AdamW with a
    weight decay): PyTorch's equivalent of one charlm training step on the same one-hot windows."""

    def __init__(self, kind, layers, hidden, vocab, lr=2e-3, clip=5.0, init="uniform", seed=0, weight_decay=0.0,
                 betas=(0.9, 0.999), eps=1e-8):
        import torch

        torch.manual_seed(seed)
        cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind]
        self.torch, self.V, self.clip = torch, vocab, clip
        self.rnn = cls(vocab, hidden, layers)
        self.head = torch.nn.Linear(hidden, vocab)
        if init == "xavier":  # charlm's scheme: Glorot input weights, orthogonal recurrent, zero bias
            for name, p in self.rnn.named_parameters():
                G = p.shape[0] // hidden
                with torch.no_grad():
                    for g in range(G):
                        blk = p[g * hidden : (g + 1) * hidden]
                        if name.startswith("weight_ih"):
                            torch.nn.init.xavier_uniform_(blk)
                        elif name.startswith("weight_hh"):
                            torch.nn.init.orthogonal_(blk)
                        else:
                            blk.zero_()
                    if kind == "lstm" and name.startswith("bias_ih"):
                        p[hidden : 2 * hidden] = 1.0  # forget gate (PyTorch order i, f, g, o)
            torch.nn.init.xavier_uniform_(self.head.weight)
            torch.nn.init.zeros_(self.head.bias)
        self.params = list(self.rnn.parameters()) + list(self.head.parameters())
        self.opt = (torch.optim.AdamW(self.params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
                    if weight_decay else torch.optim.Adam(self.params, lr=lr, betas=betas, eps=eps))
        self.eye = torch.eye(vocab)
        self.state = None
        self._single = None  # one-layer views of self.rnn, made by the first step given masks

    def load(self, model) -> None:
        """Start from a charlm Model's weights instead of this twin's own draw."""
        load_charlm_weights(model, self.rnn, self.head)

    def step(self, x, y, carry=True, masks=None):
        """x, y (T, B) int arrays -> loss; the hidden state carries between calls if ``carry``.

        ``masks``: one (T, B, H) tensor per gap between layers, multiplied into the lower layer's
        output instead of nn.LSTM's own dropout; a charlm trainer's masks, replayed, make the two
        sides' runs differ by rounding only. With ``self.rnn.dropout`` set, the step still draws
        nn.LSTM's own masks and drops them, so it costs what PyTorch's users pay."""
        torch = self.torch
        xt, yt = torch.from_numpy(x.astype("int64")), torch.from_numpy(y.astype("int64"))
        self.opt.zero_grad(set_to_none=True)
        if masks is None:
            out, state = self.rnn(self.eye[xt], self.state)
        else:
            out, state = self._masked_forward(self.eye[xt], masks)
        loss = torch.nn.functional.cross_entropy(self.head(out).reshape(-1, self.V), yt.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.opt.step()
        if carry:
            self.state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        return float(loss.detach())

    def _masked_forward(self, inp, masks):
        """self.rnn one layer at a time (one-layer modules sharing its parameters), each
        layer's output but the last multiplied by its mask -> (top output, stacked state)."""
        torch = self.torch
        if self._single is None:
            self._single = []
            for l in range(self.rnn.num_layers):
                one = type(self.rnn)(self.rnn.input_size if l == 0 else self.rnn.hidden_size, self.rnn.hidden_size, 1)
                for name in one._flat_weights_names:  # RNNBase.__setattr__ keeps its flat weights in step
                    setattr(one, name, getattr(self.rnn, name.replace("_l0", f"_l{l}")))
                self._single.append(one)
        paired = isinstance(self.rnn, torch.nn.LSTM)  # its state is (h, c)
        states = []
        for l, one in enumerate(self._single):
            s = None if self.state is None else (
                tuple(t[l : l + 1] for t in self.state) if paired else self.state[l : l + 1])
            inp, s = one(inp, s)
            states.append(s)
            if l < len(masks):
                if self.rnn.dropout:  # nn.LSTM's draw (at::dropout: bernoulli_, then div_), unused
                    torch.empty_like(inp).bernoulli_(1 - self.rnn.dropout).div_(1 - self.rnn.dropout)
                inp = inp * masks[l]
        if paired:
            return inp, tuple(torch.cat(parts) for parts in zip(*states))
        return inp, torch.cat(states)

    def reset(self):
        self.state = None

    def nll_sum(self, x, y, state):
        """Inference: summed NLL of y given x (T, B), and the next state."""
        torch = self.torch
        with torch.no_grad():
            out, state = self.rnn(self.eye[torch.from_numpy(x.astype("int64"))], state)
            logits = self.head(out).reshape(-1, self.V)
            nll = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y.astype("int64")).reshape(-1), reduction="none")
        return nll.reshape(x.shape).numpy().astype("float64"), state

    def evaluate(self, ids, batch_size, seq_length):
        from charlm.text.batches import eval_windows

        total, count, state = 0.0, 0, None
        for x, y, first in eval_windows(ids, batch_size, seq_length):
            if first:
                state = None
            nll, state = self.nll_sum(x, y, state)
            total += nll.sum()
            count += nll.size
        return total / count


def load_charlm_weights(model, rnn, head):
    """Copy a charlm Model's weights into nn.LSTM/GRU/RNN + nn.Linear (in their dtype) ->
    the row order taking charlm's gate blocks to PyTorch's (LSTM [o,i,f,g] -> [i,f,g,o]).

    charlm has one bias per gate row where PyTorch adds bias_ih and bias_hh: bias_hh is zero,
    except the GRU's candidate rows, where PyTorch's b_hn sits inside r * (...) as charlm's bhn.
    """
    import numpy as np
    import torch

    cfg, H = model.cfg, model.cfg.hidden_size
    perm = {"lstm": [1, 2, 3, 0], "gru": [0, 1, 2], "rnn": [0]}[cfg.type]
    order = np.concatenate([np.arange(g * H, (g + 1) * H) for g in perm])
    dtype = head.weight.dtype

    def put(param, value):
        param.copy_(torch.from_numpy(np.ascontiguousarray(value)).to(dtype))

    with torch.no_grad():
        for l in range(cfg.num_layers):
            P = {k.split("/")[1]: v for k, v in model.params.items() if k.startswith(f"l{l}/")}
            put(getattr(rnn, f"weight_ih_l{l}"), P["Wx"][order])
            put(getattr(rnn, f"weight_hh_l{l}"), P["Wh"][order])
            put(getattr(rnn, f"bias_ih_l{l}"), P["b"][order])
            bhh = np.zeros(len(perm) * H)
            if cfg.type == "gru":
                bhh[2 * H :] = P["bhn"]
            put(getattr(rnn, f"bias_hh_l{l}"), bhh)
        put(head.weight, model.params["head/W"])
        put(head.bias, model.params["head/b"])
    return order


def status_kb(key: str) -> int:
    """A field of /proc/self/status in kB (VmRSS: now, VmHWM: peak since the last reset)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")
