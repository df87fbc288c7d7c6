"""Every hand-written backward pass against centred finite differences in float64: each cell,
every parameter, the initial state, 1 and 2 layers, T=1 and B=1, with and without dropout."""

import numpy as np
import pytest

from charlm.config import ModelConfig
from charlm.network.model import Model
from tests.helpers import numeric_grad, rel_err

V = 7


def make(kind, layers, H=5, dropout=0.0, activation="tanh", seed=0, **noise):
    m = Model(ModelConfig(type=kind, hidden_size=H, num_layers=layers, dropout=dropout,
                          activation=activation, dtype="float64", **noise), V)
    m.init(np.random.default_rng(seed))
    m.flat += np.random.default_rng(seed + 1).normal(0, 0.3, m.flat.shape)  # break the zero biases
    return m






CASES = [(k, L, T, B) for k in ("rnn", "lstm", "gru") for (L, T, B) in ((1, 4, 3), (2, 3, 2), (1, 1, 1), (2, 5, 1))]


@pytest.mark.parametrize("kind, layers, T, B", CASES)
def test_parameter_gradients(kind, layers, T, B):
    m = make(kind, layers, dropout=0.25 if layers == 2 else 0.0)
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, V, (T, B)), rng.integers(0, V, (T, B))
    state = [tuple(rng.normal(0, 0.5, (5, B)) for _ in s) for s in m.zero_state(B)]
    loss = lambda: m.loss_and_grad(x, y, state, np.random.default_rng(9))[0]  # same dropout masks
    loss()
    analytic = m.grad.copy()
    numeric = numeric_grad(loss, m.flat)
    for name, sl in m.slices.items():
        assert rel_err(analytic[sl], numeric[sl]) < 1e-6, name


NOISE = [("rnn", dict(variational_dropout=0.3)), ("gru", dict(variational_dropout=0.3)),
         ("lstm", dict(variational_dropout=0.3))]


@pytest.mark.parametrize("kind, noise", NOISE)
@pytest.mark.parametrize("layers, T, B", [(2, 4, 3), (1, 1, 1)])
@pytest.mark.parametrize("training", [True, False])
def test_gradients_with_variational_dropout(kind, noise, layers, T, B, training):
    """The same masks at every evaluation (one seed); without an rng, none."""
    m = make(kind, layers, **noise)
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, V, (T, B)), rng.integers(0, V, (T, B))
    state = [tuple(rng.normal(0, 0.5, (5, B)) for _ in s) for s in m.zero_state(B)]
    loss = lambda: m.loss_and_grad(x, y, state, np.random.default_rng(9) if training else None)[0]
    loss()
    analytic = m.grad.copy()
    numeric = numeric_grad(loss, m.flat)
    for name, sl in m.slices.items():
        assert rel_err(analytic[sl], numeric[sl]) < 1e-6, name


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("T, B", [(3, 2), (1, 1)])
def test_initial_state_gradients(kind, T, B):
    """backward returns the initial state's gradients beside dx, like any other gradient."""
    from charlm.network.cells import CELLS

    rng = np.random.default_rng(4)
    layer = CELLS[kind](V, 5, onehot=True, dtype="float64")
    shapes = layer.param_shapes()
    layer.bind({k: rng.normal(0, 0.5, s) for k, s in shapes.items()}, {k: np.zeros(s) for k, s in shapes.items()})
    x = rng.integers(0, V, (T, B))
    w = rng.normal(0, 1, (5, T, B))  # the objective sum(out * w): dout = w
    state = tuple(rng.normal(0, 0.5, (5, B)) for _ in layer.state_names)
    f = lambda: float((layer.forward(x, state) * w).sum())
    f()
    dx, dstate = layer.backward(w.copy())
    assert dx is None and len(dstate) == len(state)
    analytic = [d.copy() for d in dstate]
    for a, s in zip(analytic, state):
        assert rel_err(a, numeric_grad(f, s)) < 1e-6


def test_relu_rnn_gradients():
    m = make("rnn", 2, activation="relu")
    rng = np.random.default_rng(5)
    x, y = rng.integers(0, V, (4, 3)), rng.integers(0, V, (4, 3))
    loss = lambda: m.loss_and_grad(x, y, m.zero_state(3))[0]
    loss()
    assert rel_err(m.grad.copy(), numeric_grad(loss, m.flat)) < 1e-6


def test_input_gradient_of_dense_layer():
    """The gradient a layer passes down (dx) matches finite differences on its input."""
    from charlm.network.cells import GRU, LSTM, RNN

    rng = np.random.default_rng(6)
    for cls in (RNN, LSTM, GRU):
        layer = cls(4, 3, onehot=False, dtype="float64")
        shapes = layer.param_shapes()
        p = {k: rng.normal(0, 0.5, s) for k, s in shapes.items()}
        layer.bind(p, {k: np.zeros(s) for k, s in shapes.items()})
        x = rng.normal(0, 1, (4, 3, 2))  # (D, T, B)
        w = rng.normal(0, 1, (3, 3, 2))  # (H, T, B)
        st = layer.zero_state(2)
        f = lambda: float((layer.forward(x, st) * w).sum())
        f()
        dx = layer.backward(w.copy())[0].copy()
        assert rel_err(dx, numeric_grad(f, x)) < 1e-6, cls.__name__
