"""A run's evaluations: the validation split's loss, the mixture's weight, early stopping's
count, and what metrics.jsonl records of each.

Every evaluation scores the same ids (``eval_ids``: the whole validation split, or a fixed
sample of it where train.eval_chars is smaller), so its numbers compare across a run and across
runs. With workers (parallel.py) the ranks split the evaluation's streams and rank 0 joins
their scores; every rank receives the result.
"""

from __future__ import annotations

import numpy as np

from ..predict.mixture import cross_fitted_nats
from ..text.batches import eval_streams
from ..use.score import LN2, char_nats
from .state import TrainState


class Evaluator:
    """The validation loss of ``model`` on ``eval_ids`` (and, once, the whole ``val_ids``)."""

    def __init__(self, model, ngram, config, workers, eval_ids: np.ndarray, val_ids: np.ndarray):
        self.model, self.ngram, self.config, self.workers = model, ngram, config, workers
        self.mixed = bool(config.model.ngram_order)
        self.eval_ids, self.val_ids = eval_ids, val_ids
        self._kn_nats = None  # the n-gram's nats of eval_ids: fixed, computed once

    def evaluate(self, st: TrainState, epochs: float) -> dict:
        """Score the evaluation sample; update ``st`` (the last loss, the mixture's weight, the
        training loss since the last evaluation, early stopping's count); the metrics record."""
        self.workers.check_same(self.model.flat, st.step)
        val, net, weight, self._kn_nats = self.losses(self.eval_ids, self._kn_nats)
        mixed = {} if net is None else {"val_loss_net": net, "mix_weight": weight}
        if net is not None:
            st.mix_weight, st.net_val = weight, net
        st.last_val = val
        record = {"step": st.step, "epoch": round(epochs, 4), "elapsed_s": round(st.elapsed_s, 3),
                  "train_loss": st.loss_sum / st.loss_count if st.loss_count else None,
                  "val_loss": val, "val_bpc": val / LN2, "lr": st.lr, **mixed}
        st.loss_sum, st.loss_count = 0.0, 0
        # Early stopping watches the network: while it is worse than the n-gram, the mixture's
        # loss stays near the n-gram's and would look like a plateau.
        ref, t = mixed.get("val_loss_net", val), self.config.train
        if st.plateau_ref is None or ref < st.plateau_ref - t.min_delta:
            st.plateau_ref, st.stale_evals = ref, 0
        else:
            st.stale_evals += 1
        return record

    def evaluate_full(self, step: int) -> dict:
        """The whole validation split's loss, once, as a metrics.jsonl event (``val_loss_full``,
        and the network's alone with a mixture); the run's evaluation state is untouched."""
        val, net, _, _ = self.losses(self.val_ids)
        return {"event": "full_eval", "step": step, "val_chars_full": len(self.val_ids),
                "val_loss_full": val, **({} if net is None else {"val_loss_net_full": net})}

    def losses(self, ids: np.ndarray, kn_nats=None):
        """Mean nats/char of ``ids`` -> (the predictor's loss, the network's alone or None
        without a mixture, the mixture's fitted weight or None, the n-gram's nats of ids, which
        a caller passes back as ``kn_nats`` to skip recomputing them)."""
        d, w = self.config.data, self.workers
        share = w.share(eval_streams(len(ids), d.batch_size, d.seq_length))  # the ranks split the streams
        nats = w.gather(char_nats(self.model, ids, d.batch_size, d.seq_length, share))  # of ids[1 .. M], rank 0
        val = net = weight = None
        if w.root and not self.mixed:
            val = float(nats.mean())
        elif w.root:
            if kn_nats is None:
                kn_nats = self.ngram.nats(ids[1 : len(nats) + 1], before=ids[:1])
            val, weight = cross_fitted_nats(nats, kn_nats)
            net = float(nats.mean())
        val, net, weight = w.broadcast([val, net, weight])
        return val, net, weight, kn_nats

