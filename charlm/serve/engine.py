"""Continuous batching: every stream in flight takes its next character in one step of the
model, as vLLM steps its sequences (Kwon et al. 2023), so sixteen clients cost little more than
one (a step's products are as cheap for 16 columns as for 1; the per-step overhead is shared).

Shape letters: B streams in the step, V vocabulary, H hidden, P a prompt's length.

A ``Stream`` is one completion choice: its prompt's ids, its ``Params`` and its own random
generator (seeded from the request, so it draws what it would draw alone: a stream's seed and
its place in a batch are independent).
The engine runs in a thread of its own, in three phases per step:

1. admit: waiting streams join, up to ``max_batch`` in flight (``submit`` refuses more than
   ``max_waiting`` waiting with ``Busy``);
2. prefill: up to ``prefill_chars`` characters of new prompts run through the model, in
   windows (with ``echo`` and ``logprobs``, each prompt character's log-probability is kept);
3. decode: the model takes one step over the batch, whose state is (H, B) arrays, one column
   per stream (a stream's column is appended when it joins and dropped when it ends, so a
   steady batch copies nothing), and each stream draws its character with its own settings
   (``sample.draw_weights`` per column, ``sample.draw`` with its own uniform).

What a stream makes goes to its consumer through ``Stream.take`` (another thread: the HTTP
side), which wakes when there is something new; the consumer takes everything that piled up at
once, so a slow reader costs one wake-up per read, not one per character. Characters that could
still turn out to start a stop string are held back until they cannot.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import NotFiniteError
from ..network.model import exp_shifted
from ..predict.predictor import Predictor
from ..text.vocab import Vocab
from ..use.sample import draw, draw_weights


class Busy(Exception):
    """More streams are waiting than the engine accepts."""


@dataclass(frozen=True)
class Params:
    """How one stream is generated (checked by the caller)."""

    max_tokens: int = 16
    temperature: float = 1.0  # 0: the most likely character every step
    top_p: float = 1.0
    top_k: int = 0  # 0: all
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: int | None = None  # the top characters' log-probabilities to report per character (0-5)
    echo: bool = False


@dataclass
class Piece:
    """Characters of a choice's text from ``offset`` on, with what ``logprobs`` asks: each one's
    log-probability under the model (temperature 1, no truncation; None for an echoed prompt's
    first character) and the most likely characters' (with it); None without ``logprobs``."""

    text: str
    offset: int
    logprobs: list | None
    tops: list | None


@dataclass
class Stream:
    prompt: np.ndarray  # (P,) int64 ids
    params: Params
    index: int = 0  # the choice's index in its response
    rng: np.random.Generator = field(default_factory=np.random.default_rng)
    finish_reason: str | None = None  # "stop" or "length" once done
    error: str | None = None
    completion_tokens: int = 0
    cancelled: bool = False  # set by the consumer: the engine drops it at the next step

    def __post_init__(self):
        # Released characters (and their log-probabilities), appended by the engine's thread and
        # read by the consumer's: list appends and int writes are atomic, so no lock is needed;
        # ``released`` is written after what it counts, and ``finish_reason`` after that.
        self.chars: list[str] = []
        self.logps: list = []
        self.tops: list = []
        self.released = 0
        self._taken = 0
        self.waiting = False  # the consumer sleeps until woken: the engine wakes it once
        self._wake: Callable[[], None] = self._event_wake
        self._event = threading.Event()
        self._held: list[tuple[str, float | None, dict | None]] = []  # made, not yet released (a stop may start there)
        self._hold = max((len(t) - 1 for t in self.params.stop), default=0)
        self.state = None
        self.x = 0  # the next input id
        self.prefilled = 0  # prompt characters run through the model so far

    @property
    def plain(self) -> bool:
        """No stop string and no log-probabilities: the engine's fast path."""
        return not self.params.stop and self.params.logprobs is None

    # ---- the consumer's side --------------------------------------------------------------
    def take(self) -> tuple[Piece | None, bool]:
        """(what was released since the last take, or None; whether the stream is finished)."""
        done = self.finish_reason is not None or self.error is not None  # read first: all it covers is released
        n, start = self.released, self._taken
        self._taken = n
        if n == start:
            return None, done
        want = self.params.logprobs is not None
        return Piece("".join(self.chars[start:n]), start, self.logps[start:n] if want else None,
                     self.tops[start:n] if want else None), done

    def sleep(self, wake: Callable[[], None] | None = None) -> bool:
        """Ask to be woken (by ``wake()``, from the engine's thread) when there is more; False
        when there already is (take again instead of sleeping)."""
        if wake is not None:
            self._wake = wake
        self._event.clear()
        self.waiting = True
        if self.released > self._taken or self.finish_reason is not None or self.error is not None:
            self.waiting = False
            return False
        return True

    def wait(self, timeout: float | None = None) -> None:
        """For a consumer in a thread: until there is more (or ``timeout``)."""
        if self.sleep():
            self._event.wait(timeout)

    def _event_wake(self) -> None:
        self._event.set()

    # ---- the engine's side ----------------------------------------------------------------
    def _publish(self, made=(), finish: str | None = None, error: str | None = None) -> None:
        """Release ``made`` [(char, log p, top)], then end with ``finish`` or ``error``."""
        for char, lp, top in made:
            self.chars.append(char)
            self.logps.append(lp)
            self.tops.append(top)
        self.released = len(self.chars)
        if error is not None:
            self.error = error
        if finish is not None:
            self.finish_reason = finish
        if self.waiting:
            self.waiting = False
            self._wake()


def _top(logp: np.ndarray, k: int, chars, also: int | None = None) -> dict[str, float]:
    """The k most likely characters' log-probabilities (V,) -> {char: log p}, with ``also``'s."""
    best = np.argsort(-logp, kind="stable")[:k].tolist()
    if also is not None and also not in best:
        best.append(also)
    return {chars[i]: float(logp[i]) for i in best}


MAX_BATCH = 64  # streams stepped together
MAX_WAITING = 256  # streams waiting for a place in the batch


class Engine:
    """Steps the streams of one model (a ``Model`` or a ``Mixture``) in a thread of its own."""

    def __init__(self, predictor: Predictor, vocab: Vocab, max_batch: int = MAX_BATCH, max_waiting: int = MAX_WAITING,
                 prefill_chars: int = 1024, window: int = 256):
        self.model, self.vocab = predictor, vocab
        self.max_batch, self.max_waiting, self.prefill_chars, self.window = max_batch, max_waiting, prefill_chars, window
        self._waiting: deque[Stream] = deque()
        self._prefilling: list[Stream] = []
        self._active: list[Stream] = []  # in the batch, in the order of its state's columns
        self._state = None  # the batch's state: per layer a tuple of (H, B) arrays
        self._cv = threading.Condition()
        self._stopping = False
        self.steps = 0  # decode steps taken, for benchmarks
        self.step_columns = 0  # streams stepped, summed over steps
        self._thread = threading.Thread(target=self._run, name="charlm-engine", daemon=True)

    def start(self) -> Engine:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Finish what is in flight, then end the thread."""
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._thread.join()

    def submit(self, streams: list[Stream]) -> None:
        with self._cv:
            if any(s.cancelled for s in self._waiting):  # their clients left: nobody waits for them
                self._waiting = deque(s for s in self._waiting if not s.cancelled)
            if len(self._waiting) + len(streams) > self.max_waiting:
                raise Busy(f"{len(self._waiting)} streams are waiting for the model")
            self._waiting.extend(streams)
            self._cv.notify()

    @property
    def in_flight(self) -> int:
        return len(self._waiting) + len(self._prefilling) + len(self._active)

    # ---- the loop -------------------------------------------------------------------------
    def _run(self) -> None:
        with self.model.inference():
            while True:
                with self._cv:
                    while not (self._waiting or self._prefilling or self._active or self._stopping):
                        self._cv.wait()
                    if self._stopping and not (self._waiting or self._prefilling or self._active):
                        return
                    while self._waiting and len(self._prefilling) + len(self._active) < self.max_batch:
                        self._prefilling.append(self._waiting.popleft())
                self._guarded(self._prefill)
                self._guarded(self._decode)

    def _guarded(self, phase) -> None:
        """A phase that raises (a bug) ends the streams in flight with an error, not the engine."""
        try:
            phase()
        except Exception as e:  # noqa: BLE001 (reported to every stream's client as a 500)
            for s in self._prefilling + self._active:
                s._publish(error=f"{type(e).__name__}: {e}")
            self._prefilling, self._active, self._state = [], [], None

    def _prefill(self) -> None:
        budget = self.prefill_chars
        for s in list(self._prefilling):
            if s.cancelled:
                self._prefilling.remove(s)
                continue
            if s.state is None:
                s.state = self.model.zero_state(1)
                if s.params.echo:  # the first character has nothing before it: no log-probability
                    s._publish([(self.vocab.chars[int(s.prompt[0])], None, None)])
            end = min(len(s.prompt) - 1, s.prefilled + max(1, budget), s.prefilled + self.window)
            if end > s.prefilled:
                x = s.prompt[s.prefilled : end, None]
                try:
                    logits, s.state = self.model.forward(x, s.state)
                except NotFiniteError as e:  # this prompt's alone: the stream ends, the others go on
                    self._prefilling.remove(s)
                    s._publish(error=str(e))
                    continue
                if s.params.echo:
                    s._publish(self._echoed(s, logits, s.prompt[s.prefilled + 1 : end + 1]))
                budget -= end - s.prefilled
                s.prefilled = end
            if s.prefilled >= len(s.prompt) - 1:
                self._prefilling.remove(s)
                s.x = int(s.prompt[-1])
                if s.params.max_tokens == 0:
                    s._publish(finish="length")
                else:
                    self._join(s)
            if budget <= 0:
                break

    def _echoed(self, s: Stream, logits: np.ndarray, targets: np.ndarray) -> list[tuple]:
        """The prompt's characters ``targets`` (t,) with their log-probabilities from ``logits`` (V, t)."""
        chars = self.vocab.chars
        if s.params.logprobs is None:
            return [(chars[y], None, None) for y in targets.tolist()]
        e = logits.astype(np.float64)
        _, total = exp_shifted(e)
        logp = np.log(e) - np.log(total)[None, :]
        return [(chars[y], float(logp[y, j]), _top(logp[:, j], s.params.logprobs, chars, y))
                for j, y in enumerate(targets.tolist())]

    def _join(self, s: Stream) -> None:
        """A prefilled stream joins the batch: its state becomes the batch state's last column."""
        if not self._active:
            self._state = s.state
        else:
            self._state = [tuple(np.concatenate([a, b], axis=1) for a, b in zip(layer, mine))
                           for layer, mine in zip(self._state, s.state)]
        s.state = None  # from now on its state is its column of the batch's
        self._active.append(s)

    def _decode(self) -> None:
        streams = self._active
        if any(s.cancelled for s in streams):
            self._keep([not s.cancelled for s in streams])
            streams = self._active
        if not streams:
            return
        B = len(streams)
        x = np.array([[s.x for s in streams]], dtype=np.int64)  # (1, B)
        try:
            logits, self._state = self.model.forward(x, self._state)
        except NotFiniteError:
            self._drop_overflowing(x)
            return
        e = logits.astype(np.float64)  # (V, B), each column's max 1 after exp_shifted
        _, total = exp_shifted(e)
        params = [s.params for s in streams]
        nxt = draw(self._weights(e, params), np.array([s.rng.random() for s in streams]))
        greedy = [b for b, q in enumerate(params) if q.temperature == 0]
        if greedy:
            nxt[greedy] = np.argmax(e[:, greedy], axis=0)
        self.steps += 1
        self.step_columns += B
        going, chars, lse = [], self.vocab.chars, None
        for b, (s, i) in enumerate(zip(streams, nxt.tolist())):
            s.x = i
            if s.plain:  # no stop string, no log-probabilities: the common case, inline
                s.chars.append(chars[i])
                s.completion_tokens += 1
                s.released += 1
                if s.completion_tokens >= s.params.max_tokens:
                    s.finish_reason = "length"
                if s.waiting:
                    s.waiting = False
                    s._wake()
                going.append(s.finish_reason is None)
                continue
            lp = top = None
            if s.params.logprobs is not None:
                lse = np.log(total) if lse is None else lse
                logp = np.log(e[:, b]) - lse[b]
                lp, top = float(logp[i]), _top(logp, s.params.logprobs, chars, i)
            going.append(self._append(s, chars[i], lp, top))
        if not all(going):
            self._keep(going)

    def _drop_overflowing(self, x: np.ndarray) -> None:
        """A step that overflowed: each stream stepped alone to find whose values are not
        finite; those end with the error, the others stay for the next step (their state as it
        was: this step is taken again)."""
        keep = []
        for b, s in enumerate(self._active):
            column = [tuple(a[:, b : b + 1] for a in layer) for layer in self._state]
            try:
                self.model.forward(x[:, b : b + 1], column)
                keep.append(True)
            except NotFiniteError as e:
                s._publish(error=str(e))
                keep.append(False)
        self._keep(keep)

    def _keep(self, keep: list[bool]) -> None:
        """Only the streams (and state columns) where ``keep`` is True stay in the batch."""
        cols = np.flatnonzero(keep)
        self._active = [s for s, k in zip(self._active, keep) if k]
        self._state = [tuple(a[:, cols] for a in layer) for layer in self._state] if len(cols) else None

    @staticmethod
    def _weights(e: np.ndarray, params: list[Params]) -> np.ndarray:
        """What each column draws from: one setting for all when the streams share theirs."""
        first = params[0]
        if all((q.temperature, q.top_k, q.top_p) == (first.temperature, first.top_k, first.top_p) for q in params):
            if (first.temperature in (0, 1)) and not first.top_k and first.top_p >= 1:
                return e  # plain sampling (or greedy, which takes its argmax instead)
            return draw_weights(e, first.temperature or 1.0, first.top_k or None, first.top_p)
        return draw_weights(e, np.array([q.temperature or 1.0 for q in params]), np.array([q.top_k for q in params]),
                            np.array([q.top_p for q in params]))

    def _append(self, s: Stream, char: str, logprob, top) -> bool:
        """Add one generated character; release what can no longer start a stop string. False
        when the stream has ended."""
        s.completion_tokens += 1
        if not s._hold:  # no stop string longer than a character: nothing is held back
            if char in s.params.stop:
                s.completion_tokens -= 1
                s._publish(finish="stop")
                return False
            done = s.completion_tokens >= s.params.max_tokens
            s._publish([(char, logprob, top)], finish="length" if done else None)
            return not done
        held = s._held
        held.append((char, logprob, top))
        tail = "".join(c for c, _, _ in held)
        stop = next((t for t in s.params.stop if tail.endswith(t)), None)
        if stop is not None:  # the stop string is left out, with anything held that belongs to it
            s.completion_tokens -= len(stop)
            s._publish(held[: len(held) - len(stop)], finish="stop")
            return False
        if s.completion_tokens >= s.params.max_tokens:
            s._publish(held, finish="length")
            return False
        if len(held) > s._hold:
            s._publish(held[: len(held) - s._hold])
            del held[: len(held) - s._hold]
        return True


def seeded(seed: int | None, index: int) -> np.random.Generator:
    """A stream's generator: choice 0 of a request draws as ``charlm sample --seed`` does; the
    others from (seed, index), so the choices differ; no seed, fresh entropy."""
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng(seed if index == 0 else [seed, index])
