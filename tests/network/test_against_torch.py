"""PyTorch as a second reference: same weights, same inputs, same losses and gradients."""

import numpy as np
import pytest

from benchmarks.common import load_charlm_weights
from charlm.config import ModelConfig, TrainConfig
from charlm.network.model import Model
from charlm.network.optim import clip_grad_norm, make_optimizer
from tests.helpers import TORCH_MARKS

pytestmark = TORCH_MARKS

V, H = 11, 6


def torch_model(m: Model):
    """A float64 PyTorch model with charlm's weights, and the row order of its gate blocks."""
    import torch

    cfg = m.cfg
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cfg.type]
    kw = {"nonlinearity": cfg.activation} if cfg.type == "rnn" else {}
    rnn = cls(V, H, num_layers=cfg.num_layers, **kw).double()
    head = torch.nn.Linear(H, V).double()
    return rnn, head, load_charlm_weights(m, rnn, head)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers", [1, 2])
def test_loss_and_gradients_match_pytorch(kind, layers):
    import torch

    m = Model(ModelConfig(type=kind, hidden_size=H, num_layers=layers, dtype="float64"), V)
    m.init(np.random.default_rng(0))
    m.flat += np.random.default_rng(1).normal(0, 0.1, m.flat.shape)
    rnn, head, order = torch_model(m)
    rng = np.random.default_rng(2)
    T, B = 7, 3
    x, y = rng.integers(0, V, (T, B)), rng.integers(0, V, (T, B))
    loss, state = m.loss_and_grad(x, y, m.zero_state(B))
    xt = torch.nn.functional.one_hot(torch.tensor(x), V).double()
    out, hn = rnn(xt)
    tl = torch.nn.functional.cross_entropy(head(out).reshape(T * B, V), torch.tensor(y.reshape(-1)))
    tl.backward()
    assert loss == pytest.approx(tl.item(), rel=1e-10)
    h_last = hn[0] if kind == "lstm" else hn
    np.testing.assert_allclose(state[-1][0].T, h_last[-1].detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(m.grads["head/W"], head.weight.grad.numpy(), atol=1e-10)
    for l in range(layers):
        np.testing.assert_allclose(m.grads[f"l{l}/Wh"][order], getattr(rnn, f"weight_hh_l{l}").grad.numpy(), atol=1e-10)
        np.testing.assert_allclose(m.grads[f"l{l}/Wx"][order], getattr(rnn, f"weight_ih_l{l}").grad.numpy(), atol=1e-10)
        np.testing.assert_allclose(m.grads[f"l{l}/b"][order], getattr(rnn, f"bias_ih_l{l}").grad.numpy(), atol=1e-10)


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "adagrad", "rmsprop"])
def test_optimizers_match_pytorch(name):
    import torch

    rng = np.random.default_rng(0)
    p0 = rng.normal(0, 1, 50)
    cfg = TrainConfig(optimizer="adam" if name == "adamw" else name, lr=0.05, eps=1e-8,
                      weight_decay=0.5 if name == "adamw" else 0.0)
    ours = p0.copy()
    opt = make_optimizer(ours, cfg)
    tp = torch.nn.Parameter(torch.tensor(p0.copy()))
    topt = {
        "adam": lambda: torch.optim.Adam([tp], lr=0.05, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps),
        "adamw": lambda: torch.optim.AdamW([tp], lr=0.05, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=0.5),
        "sgd": lambda: torch.optim.SGD([tp], lr=0.05, momentum=cfg.momentum),
        "adagrad": lambda: torch.optim.Adagrad([tp], lr=0.05, eps=cfg.eps),
        "rmsprop": lambda: torch.optim.RMSprop([tp], lr=0.05, alpha=cfg.alpha, eps=cfg.eps),
    }[name]()
    for _ in range(5):
        g = rng.normal(0, 3, 50)
        gc = g.copy()
        clip_grad_norm(gc, 5.0)
        opt.step(gc, 0.05)
        tp.grad = torch.tensor(g.copy())
        torch.nn.utils.clip_grad_norm_([tp], 5.0)
        topt.step()
    np.testing.assert_allclose(ours, tp.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
def test_adam_trains_as_pytorch_with_one_bias_per_gate_row(kind):
    """Adam over a few windows: charlm's one bias per gate row follows PyTorch's bias_ih with
    bias_hh frozen (with both trained, their sum moves twice as far as one bias)."""
    import torch

    m = Model(ModelConfig(type=kind, hidden_size=H, num_layers=2, dtype="float64"), V)
    m.init(np.random.default_rng(0))
    rnn, head, order = torch_model(m)
    for l in range(2):
        getattr(rnn, f"bias_hh_l{l}").requires_grad_(False)
    cfg = TrainConfig(lr=0.01)
    opt = make_optimizer(m.flat, cfg)
    params = [p for p in [*rnn.parameters(), *head.parameters()] if p.requires_grad]
    topt = torch.optim.Adam(params, lr=0.01, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    rng = np.random.default_rng(3)
    for _ in range(6):
        x, y = rng.integers(0, V, (5, 3)), rng.integers(0, V, (5, 3))
        m.loss_and_grad(x, y, m.zero_state(3))
        opt.step(m.grad, 0.01)
        topt.zero_grad()
        out, _ = rnn(torch.nn.functional.one_hot(torch.tensor(x), V).double())
        torch.nn.functional.cross_entropy(head(out).reshape(-1, V), torch.tensor(y.reshape(-1))).backward()
        topt.step()
    for l in range(2):
        b = getattr(rnn, f"bias_ih_l{l}") + getattr(rnn, f"bias_hh_l{l}")
        np.testing.assert_allclose(m.params[f"l{l}/b"][order], b.detach().numpy(), atol=1e-10)
        np.testing.assert_allclose(m.params[f"l{l}/Wh"][order], getattr(rnn, f"weight_hh_l{l}").detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(m.params["head/b"], head.bias.detach().numpy(), atol=1e-10)
