"""charlm's folders show the flow, and imports run one way, down it: the command line, the
server and the exporter over see/, over training/, over use/, over predict/, over network/,
over text/, over the modules at the top of the package (errors, files, config, system,
processes, threads). A module imports its own folder, or folders below it; never above."""

import ast
from pathlib import Path

import charlm

PACKAGE = Path(charlm.__file__).parent
ORDER = ["base", "text", "network", "predict", "use", "training", "see", "top"]
TOP = {"cli", "serve", "export"}


def layer(module: str) -> str:
    """'charlm.text.corpus' -> 'text'; the package's own modules are 'base' (``python -m charlm``
    is the command line)."""
    if module == "charlm.__main__":
        return "top"
    parts = module.split(".")
    if len(parts) < 3 or parts[1] not in ORDER + list(TOP):
        return "top" if parts[1:2] and parts[1] in TOP else "base"
    return "top" if parts[1] in TOP else parts[1]


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every charlm import in a module, lazy ones included."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target] if node.module or not node.level else [f"{target}.{a.name}" for a in node.names]
            out += [(node.lineno, n) for n in names if n.startswith("charlm")]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("charlm")]
    return out


def test_imports_run_down_the_flow():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "__init__.py":  # the public API names what every folder offers
            continue
        mine = layer(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        for line, target in imports(path):
            theirs = layer(target)
            if ORDER.index(theirs) > ORDER.index(mine):
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({mine}) imports {target} ({theirs})")
    assert not upward, "\n".join(upward)


def test_the_public_api_keeps_working():
    from charlm import (  # noqa: F401
        Adaptive,
        Batches,
        Checkpoint,
        Corpus,
        KneserNey,
        Mixture,
        Model,
        Reporter,
        Trainer,
        TrainResult,
        Vocab,
        beam_search,
        generate,
        load_checkpoint,
        load_config,
        load_corpus,
        sample,
        score_texts,
        train,
    )

    assert sorted(charlm.__all__) == charlm.__all__ and len(charlm.__all__) >= 30
    for name in charlm.__all__:
        assert getattr(charlm, name) is not None


def test_every_predictor_has_the_one_interface():
    import numpy as np

    from charlm.config import ModelConfig
    from charlm.network.model import Model
    from charlm.predict.adapt import Adaptive
    from charlm.predict.mixture import Mixture
    from charlm.predict.ngram import KneserNey
    from charlm.predict.predictor import Predictor

    net = Model(ModelConfig(hidden_size=8, num_layers=1), 5)
    mixed = Mixture(net, KneserNey(np.arange(40) % 5, 3, 5), 0.5)
    for p in (net, mixed, Adaptive(net), Adaptive(mixed)):
        assert isinstance(p, Predictor), type(p)
        logits, state = p.forward(np.zeros((3, 2), np.int64), p.zero_state(2))
        assert logits.shape == (5, 6)
    assert not isinstance(KneserNey(np.arange(40) % 5, 3, 5), Predictor)
