"""charlm: character-level RNN, LSTM and GRU language models in NumPy.

    from charlm import load_config, load_corpus, train, load_checkpoint, sample, score_texts
"""

__version__ = "0.1.0"
