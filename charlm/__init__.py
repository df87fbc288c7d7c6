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

from .adapt import Adaptive, AdaptOptions  # noqa: E402
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint  # noqa: E402
from .config import Config, DataConfig, ModelConfig, TrainConfig, load_config  # noqa: E402
from .data import Batches, Corpus, load_corpus  # noqa: E402
from .errors import CharlmError, CheckpointError, ConfigError, CorpusError, TrainingError, VocabError  # noqa: E402
from .mixture import Mixture  # noqa: E402
from .model import Model  # noqa: E402
from .ngram import KneserNey  # noqa: E402
from .sample import beam_search, generate, sample  # noqa: E402
from .score import Score, evaluate, score_texts  # noqa: E402
from .train import Reporter, Trainer, TrainResult, train  # noqa: E402
from .vocab import Vocab  # noqa: E402

__all__ = [
    "AdaptOptions", "Adaptive", "Batches", "CharlmError", "Checkpoint", "CheckpointError", "Config", "ConfigError",
    "Corpus", "CorpusError", "DataConfig", "KneserNey", "Mixture", "Model", "ModelConfig", "Reporter", "Score",
    "TrainConfig", "TrainResult", "Trainer", "TrainingError", "Vocab", "VocabError", "beam_search", "evaluate",
    "generate", "load_checkpoint", "load_config", "load_corpus", "sample", "save_checkpoint", "score_texts", "train",
]
