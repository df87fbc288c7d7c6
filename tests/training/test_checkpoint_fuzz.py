"""A checkpoint is data, never code: fuzz the loader with mutated real checkpoints."""

import io
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charlm.config import load_config
from charlm.errors import CheckpointError
from charlm.network.model import Model
from charlm.network.optim import make_optimizer
from charlm.predict.checkpoint import load_checkpoint, save_checkpoint
from charlm.text.vocab import Vocab

FUZZ_CASES = 600


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("ck")
    cfg = load_config(None, ["model.type=gru", "model.hidden_size=6", "model.num_layers=2", "data.batch_size=2"])
    vocab = Vocab.from_text("abc xyz\n")
    m = Model(cfg.model, len(vocab))
    m.init(np.random.default_rng(0))
    opt = make_optimizer(m.flat, cfg.train)
    path = d / "real.npz"
    save_checkpoint(path, m, vocab, cfg, {"step": 3}, optimizer=opt, state=m.zero_state(2))
    return path.read_bytes()


def _mutations():
    flip = st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255))
    cut = st.tuples(st.just("cut"), st.integers(0, 10**6), st.just(0))
    insert = st.tuples(st.just("insert"), st.integers(0, 10**6), st.integers(0, 255))
    big = st.tuples(st.just("int32"), st.integers(0, 10**6), st.sampled_from([0x7FFFFFFF, 0xFFFFFFFF, 0x10000000]))
    return st.lists(st.one_of(flip, cut, insert, big), min_size=1, max_size=4)


def _mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for kind, at, value in ops:
        if not b:
            break
        at %= len(b)
        if kind == "flip":
            b[at] ^= value
        elif kind == "cut":
            del b[at:]
        elif kind == "insert":
            b.insert(at, value)
        else:  # a huge size field: the kind of header that would make a naive loader allocate GBs
            b[at : at + 4] = int(value).to_bytes(4, "little")
    return bytes(b)


@settings(max_examples=FUZZ_CASES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_mutations())
def test_mutated_checkpoints_only_raise_checkpoint_error(real_checkpoint, tmp_path, ops):
    path = tmp_path / "m.npz"
    path.write_bytes(_mutate(real_checkpoint, ops))
    try:
        ck = load_checkpoint(path)
    except CheckpointError:
        return
    model = ck.build_model()  # what loaded is a usable model
    assert np.isfinite(model.flat).all()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.lists(st.integers(1, 2**40), min_size=1, max_size=3))
def test_crafted_huge_shapes_are_refused_before_allocation(real_checkpoint, tmp_path, shape):
    with zipfile.ZipFile(io.BytesIO(real_checkpoint)) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    header = {"descr": "<f4", "fortran_order": False, "shape": tuple(shape)}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    entries["param/l0/Wh.npy"] = buf.getvalue() + b"\0" * 64
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as z:
        for n, data in entries.items():
            z.writestr(n, data)
    with pytest.raises(CheckpointError, match="l0/Wh"):
        load_checkpoint(path)
