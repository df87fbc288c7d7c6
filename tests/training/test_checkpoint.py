import json
import zipfile

import numpy as np
import pytest

import charlm.predict.checkpoint as ckmod
from charlm.config import load_config
from charlm.errors import CheckpointError
from charlm.network.model import Model
from charlm.network.optim import make_optimizer
from charlm.predict.checkpoint import load_checkpoint, save_checkpoint
from charlm.text.vocab import Vocab


@pytest.fixture
def saved(tmp_path):
    cfg = load_config(None, ["model.hidden_size=8", "model.num_layers=2", "data.batch_size=3"])
    vocab = Vocab.from_text("hello world")
    m = Model(cfg.model, len(vocab))
    m.init(np.random.default_rng(0))
    opt = make_optimizer(m.flat, cfg.train)
    m.grad[:] = 0.1
    opt.step(m.grad, 0.01)
    state = [tuple(np.full((8, 3), 0.5, np.float32) for _ in s) for s in m.zero_state(3)]
    path = tmp_path / "last.npz"
    save_checkpoint(path, m, vocab, cfg, {"step": 7}, optimizer=opt, state=state)
    return path, m, opt, cfg, vocab


def test_round_trip(saved):
    path, m, opt, cfg, vocab = saved
    ck = load_checkpoint(path)
    assert ck.vocab == vocab and ck.config == cfg and ck.meta["step"] == 7 and ck.meta["optimizer_t"] == 1
    for name, p in m.params.items():
        np.testing.assert_array_equal(ck.params[name], p)
        np.testing.assert_array_equal(ck.optim["m"][name].reshape(-1), opt.state["m"][m.slices[name]])
    assert ck.state[1][1][0, 0] == 0.5
    with zipfile.ZipFile(path) as z:
        assert "param/l0/Wx.npy" in z.namelist() and "optim/v/head/W.npy" in z.namelist()


def test_run_directory_resolves_to_best(saved, tmp_path):
    path, *_ = saved
    assert load_checkpoint(tmp_path).meta["path"].endswith("last.npz")
    path.rename(tmp_path / "best.npz")
    assert load_checkpoint(tmp_path).meta["path"].endswith("best.npz")


def test_failed_write_keeps_previous_checkpoint(saved, monkeypatch):
    path, m, opt, cfg, vocab = saved
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckmod.np, "savez", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, m, vocab, cfg, {"step": 8}, optimizer=opt)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def _rewrite(path, change):
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    change(entries)
    with zipfile.ZipFile(path, "w") as z:
        for n, data in entries.items():
            z.writestr(n, data)


def _meta_bytes(meta):
    import io

    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    return buf.getvalue()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "not a charlm checkpoint|damaged"),
        (lambda p: p.write_bytes(np.random.default_rng(0).bytes(5000)), "not a charlm checkpoint"),
        (lambda p: p.write_bytes(b""), "not a charlm checkpoint"),
    ],
)
def test_damaged_files(saved, damage, message):
    path = saved[0]
    damage(path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_zip_that_is_not_charlm(tmp_path):
    p = tmp_path / "other.npz"
    np.savez(p, weights=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a charlm checkpoint"):
        load_checkpoint(p)


def test_newer_format_version(saved):
    path = saved[0]
    ck = load_checkpoint(path)
    meta = {k: v for k, v in ck.meta.items() if k != "path"}
    meta["version"] = 99
    _rewrite(path, lambda e: e.__setitem__("meta_json.npy", _meta_bytes(meta)))
    with pytest.raises(CheckpointError, match="format version 99 is newer"):
        load_checkpoint(path)


def test_wrong_shape_is_refused_before_reading(saved):
    path = saved[0]
    import io

    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.zeros((9, 9), np.float32))
    _rewrite(path, lambda e: e.__setitem__("param/l0/Wh.npy", buf.getvalue()))
    with pytest.raises(CheckpointError, match=r"l0/Wh is float32\(9, 9\), expected float32\(32, 8\)"):
        load_checkpoint(path)


def test_pickled_object_is_never_loaded(saved, tmp_path):
    path = saved[0]
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    import io

    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.array([Evil()], dtype=object), allow_pickle=True)
    _rewrite(path, lambda e: e.__setitem__("param/l0/Wx.npy", buf.getvalue()))
    with pytest.raises(CheckpointError, match="Python objects"):
        load_checkpoint(path)
    assert not marker.exists()


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.npz")
