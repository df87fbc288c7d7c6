"""The fast cells compute exactly what tests/reference.py writes out step by step, forward and
backward, for every cell, activation and layer count; and the seeds' toy experiments."""

import numpy as np
import pytest

from charlm.config import ModelConfig, TrainConfig
from charlm.network.cells import CELLS
from charlm.network.model import Model
from charlm.network.optim import make_optimizer
from charlm.text.vocab import Vocab
from tests import reference as ref

KINDS = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")]


def close(a, b, tol=1e-10):
    scale = max(1.0, float(np.abs(b).max()))
    assert np.abs(np.asarray(a) - np.asarray(b)).max() <= tol * scale


def random_layer(kind, activation, D, H, onehot, rng, **noise):
    cls = CELLS[kind]
    layer = cls(D, H, onehot=onehot, dtype="float64", **({"activation": activation} if kind == "rnn" else {}),
                **noise)
    shapes = layer.param_shapes()
    p = {k: rng.normal(0, 0.5, s) for k, s in shapes.items()}
    layer.bind(p, {k: np.zeros(s) for k, s in shapes.items()})
    return layer, p


@pytest.mark.parametrize("kind, activation", KINDS)
@pytest.mark.parametrize("onehot", [True, False])
@pytest.mark.parametrize("T, B", [(5, 3), (1, 1)])
def test_layer_matches_the_reference(kind, activation, onehot, T, B):
    rng = np.random.default_rng(1)
    D, H = 6, 4
    layer, p = random_layer(kind, activation, D, H, onehot, rng)
    state = tuple(rng.normal(0, 0.5, (H, B)) for _ in layer.state_names)
    if onehot:
        x = rng.integers(0, D, (T, B))
        xs = [ref.onehot(x[t], D) for t in range(T)]
    else:
        x = rng.normal(0, 1, (D, T, B))
        xs = [x[:, t] for t in range(T)]
    out = layer.forward(x, state).copy()  # (H, T, B)
    want, caches = ref.layer_forward(kind, xs, state, p, activation)
    for t in range(T):
        close(out[:, t], want[t])
    for got, exp in zip(layer.last_state(), (want[-1], caches[-1][-1]) if kind == "lstm" else (want[-1],)):
        close(got, exp)
    backward_matches(layer, p, kind, activation, caches, rng.normal(0, 1, (H, T, B)), onehot)


def backward_matches(layer, p, kind, activation, caches, dout, onehot=False):
    """The layer's backward from dout (H, T, B) against the reference's, after their forwards."""
    T = dout.shape[1]
    dx, dstate = layer.backward(dout.copy())
    dxs, dstate_ref, grads = ref.layer_backward(kind, [dout[:, t] for t in range(T)], caches, p, activation)
    for name in p:
        close(layer.g[name], grads[name])
    for a, b in zip(dstate, dstate_ref):
        close(a, b)
    if onehot:
        assert dx is None
    else:
        for t in range(T):
            close(dx[:, t], dxs[t])


@pytest.mark.parametrize("kind, activation", KINDS)
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_model_loss_and_gradients_match_the_reference(kind, activation, layers):
    V, H, T, B = 7, 5, 4, 3
    m = Model(ModelConfig(type=kind, hidden_size=H, num_layers=layers, activation=activation, dtype="float64"), V)
    m.init(np.random.default_rng(0))
    m.flat += np.random.default_rng(1).normal(0, 0.3, m.flat.shape)
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, V, (T, B)), rng.integers(0, V, (T, B))
    state = [tuple(rng.normal(0, 0.5, (H, B)) for _ in s) for s in m.zero_state(B)]
    loss, _ = m.loss_and_grad(x, y, state)
    want_loss, want = ref.model_loss_and_grads(kind, {k: v.copy() for k, v in m.params.items()}, x, y, state, V,
                                               activation)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    assert set(want) == set(m.grads)
    for name, g in m.grads.items():
        close(g, want[name])


def layer_noise(layer, T):
    """The masks the fast layer drew for its last window, as the reference takes them."""
    return {"m": 1.0 if layer._rmask is None else layer._rmask.copy()}


NOISY = [("rnn", "relu", dict(recurrent_dropout=0.4)), ("gru", "tanh", dict(recurrent_dropout=0.4)),
         ("lstm", "tanh", dict(recurrent_dropout=0.4))]


@pytest.mark.parametrize("kind, activation, noise", NOISY)
@pytest.mark.parametrize("training", [True, False])
def test_layer_with_recurrent_dropout_matches_the_reference(kind, activation, noise, training):
    rng = np.random.default_rng(5)
    D, H, T, B = 6, 4, 6, 3
    layer, p = random_layer(kind, activation, D, H, False, rng, **noise)
    state = tuple(rng.normal(0, 0.5, (H, B)) for _ in layer.state_names)
    x = rng.normal(0, 1, (D, T, B))
    out = layer.forward(x, state, np.random.default_rng(6) if training else None).copy()
    masks = layer_noise(layer, T)
    assert (layer._rmask is not None) == (training and "recurrent_dropout" in noise)  # none at inference
    if training:  # the masks are real draws: some units dropped, some kept, the same at every step
        assert layer._rmask is None or 0 < (masks["m"] == 0).sum() < H * B
    want, caches = ref.layer_forward(kind, [x[:, t] for t in range(T)], state, p, activation, **masks)
    for t in range(T):
        close(out[:, t], want[t])
    backward_matches(layer, p, kind, activation, caches, rng.normal(0, 1, (H, T, B)))


@pytest.mark.parametrize("kind, noise", [("gru", dict(variational_dropout=0.3)),
                                         ("lstm", dict(variational_dropout=0.3))])
def test_model_with_variational_dropout_matches_the_reference(kind, noise):
    V, H, T, B, layers = 7, 5, 4, 3, 2
    m = Model(ModelConfig(type=kind, hidden_size=H, num_layers=layers, dtype="float64", **noise), V)
    m.init(np.random.default_rng(0))
    m.flat += np.random.default_rng(1).normal(0, 0.3, m.flat.shape)
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, V, (T, B)), rng.integers(0, V, (T, B))
    state = [tuple(rng.normal(0, 0.5, (H, B)) for _ in s) for s in m.zero_state(B)]
    loss, _ = m.loss_and_grad(x, y, state, np.random.default_rng(3))
    masks = [layer_noise(layer, T) for layer in m.layers]
    for l, n in enumerate(masks):  # one output mask per stream, the same at every step
        out = m._head_bufs[(f"dropout{l}", T, B)].mask
        assert out.shape == (H, 1, B) and 0 < (out == 0).sum() < H * B
        n["out"] = out[:, 0].copy()
    want_loss, want = ref.model_loss_and_grads(kind, {k: v.copy() for k, v in m.params.items()}, x, y, state, V,
                                               noise=masks)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    for name, g in m.grads.items():
        close(g, want[name])


def train_until(m, x, y, done, steps=3000, lr=0.05):
    """Adam on one fixed window until ``done(logits)``; the number of steps it took."""
    opt = make_optimizer(m.flat, TrainConfig(lr=lr))
    for step in range(1, steps + 1):
        m.loss_and_grad(x, y, m.zero_state(x.shape[1]))
        opt.step(m.grad, lr)
        logits, _ = m.forward(x, m.zero_state(x.shape[1]))
        if done(logits.reshape(-1, *x.shape)):
            return step
    raise AssertionError(f"not learned in {steps} steps")


def test_hello_next_character_is_learned_exactly():
    """The seeds' first example: vocabulary [h, e, l, o] (one-hot, here sorted: e h l o),
    inputs h, e, l, l and targets e, l, l, o. 'l' must be followed once by 'l' and once by
    'o', so a tiny RNN can only get all four right by remembering what came before."""
    v = Vocab(sorted("helo"))
    x = v.encode("hell").astype(np.int64)[:, None]  # (T=4, B=1)
    y = v.encode("ello").astype(np.int64)[:, None]
    m = Model(ModelConfig(type="rnn", hidden_size=3, num_layers=1, dtype="float64"), len(v))
    m.init(np.random.default_rng(0))
    steps = train_until(m, x, y, lambda L: (L.argmax(axis=0) == y).all())
    logits, _ = m.forward(x, m.zero_state(1))
    assert v.decode(logits.argmax(axis=0)) == "ello" and steps < 3000


def test_hero_hell_hole_many_to_many():
    """The seeds' many-to-many vanilla RNN: 4 hidden units, one-hot inputs over the five
    characters h, e, l, r, o, the three words as a batch of three sequences. As the seed sets
    it up, the targets are the input characters themselves (each output names the character
    just read), and it trains until it outputs all three words."""
    words = ["hero", "hell", "hole"]
    v = Vocab(sorted("helro"))
    x = np.stack([v.encode(w).astype(np.int64) for w in words], axis=1)  # (T=4, B=3)
    y = x.copy()  # targets = inputs, as in the seed
    m = Model(ModelConfig(type="rnn", hidden_size=4, num_layers=1, dtype="float64"), len(v))
    m.init(np.random.default_rng(0))
    train_until(m, x, y, lambda L: (L.argmax(axis=0) == y).all())
    logits, _ = m.forward(x, m.zero_state(3))
    out = logits.argmax(axis=0).reshape(4, 3)
    assert [v.decode(out[:, b]) for b in range(3)] == words
