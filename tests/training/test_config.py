import time

import pytest

from charlm.config import Config, load_config, read_yaml
from charlm.errors import ConfigError, echo
from tests.helpers import ROOT


def test_defaults_and_partial_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  hidden_size: 64\ntrain:\n  lr: 1e-3\n")
    cfg = load_config(p)
    assert cfg.name == "c"
    assert cfg.model.hidden_size == 64 and cfg.model.type == "lstm"
    assert cfg.train.lr == 0.001  # YAML 1.1 reads 1e-3 as a string; accepted as a number
    assert cfg.data.val_fraction == 0.1


def test_set_overrides_win():
    cfg = load_config(None, ["model.type=gru", "train.max_steps=7", "train.epochs=null"])
    assert cfg.model.type == "gru" and cfg.train.max_steps == 7 and cfg.train.epochs is None


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.hiden_size=3", "unknown key model.hiden_size.*did you mean 'hidden_size'"),
        ("modle.type=rnn", "unknown section 'modle'.*did you mean 'model'"),
        ("model.hidden_size=abc", "model.hidden_size must be an integer, got 'abc'"),
        ("model.hidden_size=2.5", "model.hidden_size must be an integer"),
        ("model.hidden_size=0", "model.hidden_size is 0; it must be >= 1"),
        ("train.lr=0", "train.lr is 0.0; it must be > 0.0"),
        ("train.lr=-1", "train.lr is -1.0"),
        ("model.dropout=1", "model.dropout is 1.0; it must be >= 0.0 and < 1.0"),
        ("data.seq_length=0", "data.seq_length is 0"),
        ("model.type=lsmt", "model.type is 'lsmt' \\(did you mean 'lstm'\\?\\); allowed: rnn, lstm, gru"),
        ("train.optimizer=adamw", "allowed: adam, sgd, adagrad, rmsprop"),
        ("train.lr", "expected section.key=value"),
        ("lr=3", "expected section.key=value"),
        ("train.lr=[1", "cannot parse the value"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_yaml_syntax_error_has_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  type: lstm\n  hidden_size: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: YAML error at line \d+"):
        load_config(p)


def test_python_object_tag_is_refused(tmp_path):
    p = tmp_path / "evil.yaml"
    marker = tmp_path / "pwned"
    p.write_text(f"model: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="YAML error"):
        read_yaml(p)
    assert not marker.exists()


def test_resolved_config_round_trips():
    cfg = load_config(None, ["model.type=rnn", "model.activation=relu", "train.max_minutes=2.5"])
    again = Config.from_dict(cfg.to_dict(), name=cfg.name)
    assert again == cfg
    import yaml

    assert Config.from_dict(yaml.safe_load(cfg.to_yaml()), name=cfg.name) == cfg


def test_shipped_configs_load():

    configs = sorted((ROOT / "configs").glob("*.yaml"))
    names = {p.stem for p in configs}
    assert {"rnn-tiny", "lstm-shakespeare", "lstm-bundled", "gru-shakespeare", "min-char-rnn", "lstm-1min", "lstm-60min"} <= names
    for p in configs:
        load_config(p)
    mcr = load_config(ROOT / "configs" / "min-char-rnn.yaml")
    assert (mcr.model.type, mcr.model.hidden_size, mcr.data.seq_length, mcr.data.batch_size) == ("rnn", 100, 25, 1)
    assert (mcr.train.optimizer, mcr.train.lr) == ("adagrad", 0.1)


def test_echo_is_short_and_fast_on_any_value():
    lol = ["lol"] * 9
    for _ in range(30):  # 9**30 leaves if walked
        lol = [lol] * 9
    t0 = time.perf_counter()
    for value in [lol, "x" * 10_000_000, list(range(10**6)), {"k" * 10**6: 1}, 10**5000]:
        assert len(echo(value)) <= 60
    assert time.perf_counter() - t0 < 0.5

def test_config_errors_echo_a_short_prefix(tmp_path):
    lol = ["lol"] * 9
    for _ in range(30):
        lol = [lol] * 9
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        Config.from_dict({"model": {"hidden_size": lol}})
    assert len(str(e.value)) < 200 and time.perf_counter() - t0 < 0.5
    with pytest.raises(ConfigError, match="config file is 2,000,0"):
        p = tmp_path / "big.yaml"
        p.write_text("#" * 2_000_000)
        load_config(p)
    with pytest.raises(ConfigError, match="train.lr_schedule cosine needs train.max_steps, train.epochs or train.max_minutes"):
        Config.from_dict({"train": {"lr_schedule": "cosine", "epochs": None}})
    assert Config.from_dict({"train": {"lr_schedule": "linear", "epochs": None, "max_minutes": 1}}).train.max_minutes == 1
    with pytest.raises(ConfigError, match="train.weight_decay is AdamW's decoupled decay; it needs train.optimizer adam"):
        Config.from_dict({"train": {"optimizer": "sgd", "weight_decay": 0.1}})
