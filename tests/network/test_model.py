import math

import numpy as np
import pytest

from charlm.config import Config, ModelConfig
from charlm.errors import ConfigError
from charlm.network.model import Model, param_shapes


def test_parameter_count_matches_keras_simple_rnn():
    m = Model(ModelConfig(type="rnn", hidden_size=4, num_layers=1), 2)
    counts = dict(m.param_counts())
    assert counts["l0"] == 28  # 2*4 + 4*4 + 4, as the seed's Keras SimpleRNN summary
    assert counts["head"] == 4 * 2 + 2


def test_lstm_and_gru_counts():
    assert dict(Model(ModelConfig(type="lstm", hidden_size=10, num_layers=2), 5).param_counts()) == {
        "l0": 4 * (5 * 10 + 10 * 10 + 10), "l1": 4 * (10 * 10 + 10 * 10 + 10), "head": 10 * 5 + 5}
    assert dict(Model(ModelConfig(type="gru", hidden_size=10, num_layers=1), 5).param_counts())["l0"] == (
        3 * (5 * 10 + 10 * 10 + 10) + 10)


def test_init_scheme():
    m = Model(ModelConfig(type="lstm", hidden_size=8, num_layers=1, forget_bias=1.0), 6)
    m.init(np.random.default_rng(0))
    Wh, b = m.params["l0/Wh"], m.params["l0/b"]
    for g in range(4):  # each gate's recurrent block is orthogonal
        blk = Wh[g * 8 : (g + 1) * 8].astype(np.float64)
        np.testing.assert_allclose(blk.T @ blk, np.eye(8), atol=1e-5)
    np.testing.assert_array_equal(b[16:24], 1.0)  # forget gate (order o, i, f, g)
    assert (b[:16] == 0).all() and (b[24:] == 0).all()
    limit = math.sqrt(6 / (6 + 8))
    assert np.abs(m.params["l0/Wx"]).max() <= limit


def test_zero_init_is_refused_with_reason():
    with pytest.raises(ConfigError, match="model.init 'zeros' is refused: .*symmetry"):
        Config.from_dict({"model": {"init": "zeros"}})


def test_he_init_draws_kaiming_normal_weights_and_zero_biases():
    """He et al. (2015): std sqrt(2 / fan_in), so a relu layer keeps its activations' scale."""
    m = Model(ModelConfig(type="rnn", activation="relu", init="he", hidden_size=400, num_layers=2), 300)
    m.init(np.random.default_rng(0))
    for name, fan_in in [("l0/Wx", 300), ("l0/Wh", 400), ("l1/Wx", 400), ("l1/Wh", 400)]:
        w = m.params[name].astype(np.float64)
        assert abs(w.mean()) < 0.01 * w.std()
        assert abs(w.std() / math.sqrt(2.0 / fan_in) - 1.0) < 0.02, name
    assert (m.params["l0/b"] == 0).all() and (m.params["l1/b"] == 0).all()
    # the activations' mean square stays near the input's through a relu layer, which xavier halves
    x = np.random.default_rng(1).standard_normal((400, 2000))
    h = np.maximum(m.params["l1/Wx"].astype(np.float64) @ x, 0)
    assert 0.85 < (h * h).mean() / (x * x).mean() < 1.15


def test_initial_loss_is_near_uniform():
    m = Model(ModelConfig(type="lstm", hidden_size=32, num_layers=2), 50)
    m.init(np.random.default_rng(0))
    x = np.random.default_rng(1).integers(0, 50, (10, 4))
    loss, _ = m.loss_and_grad(x, x, m.zero_state(4))
    assert abs(loss - math.log(50)) < 0.3


def test_float32_default_and_float64_selectable():
    assert Model(ModelConfig(), 5).flat.dtype == np.float32
    assert Model(ModelConfig(dtype="float64"), 5).flat.dtype == np.float64


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_state_carries_across_windows(kind):
    """Two windows with the carried state equal one window twice as long (forward values)."""
    m = Model(ModelConfig(type=kind, hidden_size=8, num_layers=2, dtype="float64"), 6)
    m.init(np.random.default_rng(0))
    x = np.random.default_rng(1).integers(0, 6, (10, 3))
    y = np.roll(x, -1, axis=0)
    whole, _ = m.nll(x, y, m.zero_state(3))
    a, st = m.nll(x[:5], y[:5], m.zero_state(3))
    b, _ = m.nll(x[5:], y[5:], st)
    np.testing.assert_allclose(np.concatenate([a, b]), whole, atol=1e-12)
    c, _ = m.nll(x[5:], y[5:], m.zero_state(3))  # a reset state gives different values
    assert not np.allclose(c, b)


def test_training_nll_equals_inference_nll():
    m = Model(ModelConfig(type="lstm", hidden_size=8, num_layers=2, dtype="float64"), 6)
    m.init(np.random.default_rng(0))
    x = np.random.default_rng(1).integers(0, 6, (7, 3))
    loss, _ = m.loss_and_grad(x, x, m.zero_state(3))
    nll, _ = m.nll(x, x, m.zero_state(3))
    assert loss == pytest.approx(nll.mean(), rel=1e-12)


def test_param_shapes_do_not_allocate():
    shapes = param_shapes(ModelConfig(type="lstm", hidden_size=50000, num_layers=2), 100)
    assert shapes["l1/Wh"] == (200000, 50000) and shapes["head/W"] == (100, 50000)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_learns_hello(kind):
    """A small model memorises 'hello' sequences: loss falls far below uniform."""
    from charlm.config import TrainConfig
    from charlm.network.optim import clip_grad_norm, make_optimizer
    from charlm.text.vocab import Vocab

    v = Vocab.from_text("helo ")
    ids = v.encode("hello " * 40).astype(np.int64)
    m = Model(ModelConfig(type=kind, hidden_size=16, num_layers=1), len(v))
    m.init(np.random.default_rng(0))
    opt = make_optimizer(m.flat, TrainConfig(lr=0.02))
    x, y = ids[:-1].reshape(-1, 1)[:200], ids[1:].reshape(-1, 1)[:200]
    for _ in range(150):
        loss, _ = m.loss_and_grad(x[:60], y[:60], m.zero_state(1))
        clip_grad_norm(m.grad, 5)
        opt.step(m.grad, 0.02)
    assert loss < 0.3, loss
