"""Continuing a run from its last checkpoint exactly: the weights, the optimizer's state, the
step, the schedule, the data position, the hidden state carried into the next window, and every
rank's random generator, so a run stopped and resumed ends where one that never stopped ends,
bit for bit. Only the train section of the config may change (to extend a run or change its
cadence); another corpus needs ``allow_new_corpus`` and is logged in metrics.jsonl.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import SECTIONS, Config
from ..errors import CheckpointError
from ..predict.checkpoint import LAST, Checkpoint, checkpoint_path, load_checkpoint
from ..text.corpus import describe_fingerprint
from .state import CorpusMismatchError, TrainState


def resume(checkpoint, corpus, config: Config | None = None, out_dir=None, reporter=None,
           allow_new_corpus: bool = False, workers=None):
    """The ``Trainer`` of the run saved in ``checkpoint`` (a Checkpoint, a last.npz, or a run
    directory), ready to go on. ``config`` may change train.* keys only."""
    from .trainer import Trainer

    ck = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint_path(checkpoint, resume=True))
    path = Path(ck.meta.get("path", LAST))
    config = config or ck.config
    _check_resumable(ck, config, path)
    config = Config.from_dict(config.to_dict(), name=ck.config.name)
    # The corpus is encoded with the checkpoint's vocabulary; a character it lacks is a
    # CorpusError naming it.
    tr = Trainer(config, corpus, out_dir or path.parent, reporter, vocab=ck.vocab, workers=workers)
    tr.resumed_from = path
    _restore(tr, ck, allow_new_corpus)
    return tr


def _restore(tr, ck: Checkpoint, allow_new_corpus: bool) -> None:
    ck.load_params(tr.model)
    if not ck.optim:
        raise CheckpointError("checkpoint has no optimizer state; it cannot be resumed (sampling and scoring still work)")
    for slot, arrays in ck.optim.items():
        if slot not in tr.optimizer.state:  # a slot the resumed run's optimizer does not keep
            continue
        for name, a in arrays.items():
            tr.optimizer.state[slot][tr.model.slices[name]] = a.reshape(-1)
    try:
        tr.optimizer.t = int(ck.meta["optimizer_t"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint lacks training progress ({e}); it cannot be resumed") from None
    tr.state = st = TrainState.from_meta(ck.meta)
    _restore_ranks(tr, st)
    old, new = ck.meta.get("corpus"), tr.corpus.fingerprint
    if isinstance(old, dict) and (old.get("chars"), old.get("sha256")) != (new["chars"], new["sha256"]):
        if not allow_new_corpus:
            raise CorpusMismatchError(f"{describe_fingerprint(new)} is not the corpus this run was trained on, "
                                      f"{describe_fingerprint(old)}; {{allow_new_corpus}} fine-tunes on it",
                                      allow_new_corpus=True)
        # Fine-tuning: the old data position means nothing in the new text; start its first epoch.
        st.batch = 0
        tr.events.append({"step": st.step, "event": "new_corpus", "corpus": new, "previous": old})
    if not 0 <= st.batch < tr.batches.num_windows:
        raise CheckpointError(f"checkpoint data position {st.batch} is outside this corpus's {tr.batches.num_windows} windows")
    tr.hidden = tr.workers.local_state(ck.state) if st.batch > 0 and ck.state is not None else None


def _restore_ranks(tr, st: TrainState) -> None:
    """Each rank's RNG as the checkpoint saved it; with another worker count than it was saved
    with, ranks 1.. draw new streams (the hidden state still carries over exactly)."""
    w, saved = tr.workers, 1 + len(st.rank_rngs or [])
    if w.rank and saved == w.size:
        st.rng.bit_generator.state = st.rank_rngs[w.rank - 1]
    elif w.rank:
        st.rng = np.random.default_rng([tr.config.train.seed, w.rank, st.step])
    if saved != w.size:
        tr.events.append({"step": st.step, "event": "workers", "workers": w.size, "previous": saved})
    st.rank_rngs = None


def _check_resumable(ck: Checkpoint, config: Config, path) -> None:
    """Only the train section may change on resume (to extend a run or change its cadence)."""
    for section in SECTIONS:
        if section != "train" and getattr(config, section) != getattr(ck.config, section):
            raise CheckpointError(
                f"{path}: cannot resume with a different {section} section; only train.* keys may change "
                "(resume without a config to use the checkpoint's)"
            )
