"""The network: the recurrent cells, the model (a stack of them, dropout, the head), the
optimizers and learning-rate schedules that train it, the memory a training run needs, and
NumPy's OpenBLAS asked directly. Imports only text/ (the vocabulary's id type) below it."""
