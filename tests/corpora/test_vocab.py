import numpy as np
import pytest

from charlm.config import ModelConfig
from charlm.errors import VocabError
from charlm.network.model import Model
from charlm.text.vocab import Vocab, token_dtype


def test_vocab_is_sorted_set_and_deterministic():
    v = Vocab.from_text("hello")
    assert v.chars == ("e", "h", "l", "o")
    assert Vocab.from_text("olleh") == v


def test_encode_decode_round_trip_unicode():
    text = "héllo wörld 😀\r\n한국어"
    v = Vocab.from_text(text)
    ids = v.encode(text)
    assert v.decode(ids) == text
    assert [v.chars[i] for i in ids] == list(text)


def test_unknown_characters_are_named():
    v = Vocab.from_text("hello")
    with pytest.raises(VocabError, match=r"'z'.*'!'"):
        v.encode("hez!")


def test_token_dtype_is_compact():
    assert token_dtype(65) == np.uint8
    assert token_dtype(256) == np.uint8
    assert token_dtype(257) == np.uint16
    v = Vocab.from_text("".join(chr(0xAC00 + i) for i in range(3000)))
    assert v.encode(v.chars[0] * 5).dtype == np.uint16


def test_gather_equals_one_hot_product():
    """Character i is the unit vector e_i: gathering column i of Wx is Wx e_i."""
    v = Vocab.from_text("hero hell hole")
    m = Model(ModelConfig(type="rnn", hidden_size=6, num_layers=1, dtype="float64"), len(v))
    m.init(np.random.default_rng(0))
    ids = v.encode("hello hero").astype(np.int64).reshape(-1, 1)  # (T, B=1)
    layer = m.layers[0]
    gathered = np.empty((len(ids), 6, 1))  # (T, H, B)
    layer.project(ids, gathered)
    one_hot = np.eye(len(v))[ids[:, 0]].T  # (V, T)
    np.testing.assert_allclose(gathered[:, :, 0].T, layer.p["Wx"] @ one_hot + layer.p["b"][:, None], rtol=0, atol=1e-12)
    # and the whole forward pass agrees with a dense copy of the layer fed one-hot vectors
    from charlm.network.cells import RNN

    dense = RNN(len(v), 6, onehot=False, dtype="float64")
    dense.bind(layer.p, layer.g)
    h0 = layer.zero_state(1)
    np.testing.assert_allclose(layer.forward(ids, h0).copy(), dense.forward(one_hot[:, :, None], h0), atol=1e-12)
