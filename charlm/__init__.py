"""charlm: character-level RNN, LSTM and GRU language models in NumPy.

    from charlm import load_config, train, load_checkpoint, sample, score_texts

    cfg = load_config("configs/rnn-tiny.yaml", ["train.max_steps=100"])
    result = train(cfg, "corpus.txt", "runs/demo")
    ck = load_checkpoint(result.out_dir / "best.npz")
    model = ck.build_predictor()  # the network, mixed with its n-gram when it has one
    print("".join(sample(model, ck.vocab, 200, prime="ROMEO:", seed=1)))
    print(score_texts(model, ck.vocab, ["To be, or not to be"])[0].bits_per_char)
"""

__version__ = "0.1.0"

from .threads import one_thread_per_rank  # noqa: E402

one_thread_per_rank()  # before anything loads NumPy

# The public API, each name from the module that owns it, imported on first use (PEP 562): a
# process that needs one corner of charlm (the command line, a worker) loads only that corner,
# and a Ctrl-C while it loads is the command's to handle.
_PUBLIC = {
    "predict.adapt": ["AdaptOptions", "Adaptive"],
    "predict.checkpoint": ["Checkpoint", "load_checkpoint", "save_checkpoint"],
    "config": ["Config", "DataConfig", "ModelConfig", "TrainConfig", "load_config"],
    "text.batches": ["Batches"],
    "text.corpus": ["Corpus", "load_corpus"],
    "errors": ["CharlmError", "CheckpointError", "ConfigError", "CorpusError", "TrainingError", "VocabError"],
    "predict.mixture": ["Mixture"],
    "network.model": ["Model"],
    "predict.ngram": ["KneserNey"],
    "use.sample": ["beam_search", "generate", "sample"],
    "use.score": ["Score", "evaluate", "score_texts"],
    "training.state": ["Reporter", "TrainResult"],
    "training.plan": ["describe_run", "plan"],
    "training.trainer": ["Trainer", "train"],
    "text.vocab": ["Vocab"],
}
_OWNER = {name: module for module, names in _PUBLIC.items() for name in names}
__all__ = sorted(_OWNER)


def __getattr__(name: str):
    if name not in _OWNER:
        raise AttributeError(f"module 'charlm' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{_OWNER[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
