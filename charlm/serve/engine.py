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
from ..model import exp_shifted
from ..sample import draw, draw_weights
from ..vocab import Vocab


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
class Token:
    """One character of a choice's text, with what ``logprobs`` asks: its log-probability
    under the model (temperature 1, no truncation; None for a prompt's first character) and
    the most likely characters' (with it)."""

    char: str
    logprob: float | None
    top: dict[str, float] | None
    offset: int


@dataclass
class Stream:
    prompt: np.ndarray  # (P,) int64 ids
    params: Params
    index: int = 0  # the choice's index in its response
    rng: np.random.Generator = field(default_factory=np.random.default_rng)
    # made by the engine, read by the consumer through take()
    tokens: list[Token] = field(default_factory=list)
    finish_reason: str | None = None  # "stop" or "length" once done
    error: str | None = None
    completion_tokens: int = 0
    cancelled: bool = False  # set by the consumer: the engine drops it at the next step

    def __post_init__(self):
        self._lock = threading.Lock()
        self._ready = threading.Event()  # or an asyncio-aware waker set by the consumer
        self._wake: Callable[[], None] | None = None
        self._taken = 0
        self._text: list[str] = []  # generated characters, held back ones included
        self._logp: list[tuple[float, dict | None]] = []
        self._held = 0  # generated characters not yet released to tokens
        self._offset = 0
        self.state = None
        self.x = 0  # the next input id
        self.prefilled = 0  # prompt characters run through the model so far

    # ---- the consumer's side --------------------------------------------------------------
    def on_ready(self, wake: Callable[[], None]) -> None:
        """``wake()`` is called (from the engine's thread) when there is something to take."""
        self._wake = wake

    def take(self) -> tuple[list[Token], bool]:
        """(the tokens made since the last take, whether the stream is finished)."""
        with self._lock:
            new = self.tokens[self._taken :]
            self._taken = len(self.tokens)
            self._ready.clear()
            return new, self.finish_reason is not None or self.error is not None

    def wait(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    # ---- the engine's side ----------------------------------------------------------------
    def _publish(self, tokens: list[Token] = (), finish: str | None = None, error: str | None = None) -> None:
        with self._lock:
            self.tokens.extend(tokens)
            if finish is not None:
                self.finish_reason = finish
            if error is not None:
                self.error = error
            first = not self._ready.is_set()
            self._ready.set()
        if first and self._wake is not None:
            self._wake()


def _top(logp: np.ndarray, k: int, chars, also: int | None = None) -> dict[str, float]:
    """The k most likely characters' log-probabilities (V,) -> {char: log p}, with ``also``'s."""
    best = np.argsort(-logp, kind="stable")[:k].tolist()
    if also is not None and also not in best:
        best.append(also)
    return {chars[i]: float(logp[i]) for i in best}


class Engine:
    """Steps the streams of one model (a ``Model`` or a ``Mixture``) in a thread of its own."""

    def __init__(self, predictor, vocab: Vocab, max_batch: int = 64, max_waiting: int = 256,
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
                if s.params.echo:
                    first = self.vocab.chars[int(s.prompt[0])]
                    s._publish([Token(first, None, None, 0)])  # nothing before it: no log-probability
                    s._offset = 1
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

    def _echoed(self, s: Stream, logits: np.ndarray, targets: np.ndarray) -> list[Token]:
        """The prompt's characters ``targets`` (t,) with their log-probabilities from ``logits`` (V, t)."""
        out, chars = [], self.vocab.chars
        want = s.params.logprobs is not None
        if want:
            e = logits.astype(np.float64)
            _, total = exp_shifted(e)
            logp = np.log(e) - np.log(total)[None, :]
        for j, y in enumerate(targets.tolist()):
            lp = float(logp[y, j]) if want else None
            out.append(Token(chars[y], lp, _top(logp[:, j], s.params.logprobs, chars, y) if want else None, s._offset))
            s._offset += 1
        return out

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
        lse = np.log(total)
        nxt = draw(self._weights(e, [s.params for s in streams]), np.array([s.rng.random() for s in streams]))
        greedy = [b for b, s in enumerate(streams) if s.params.temperature == 0]
        if greedy:
            nxt[greedy] = np.argmax(e[:, greedy], axis=0)
        self.steps += 1
        self.step_columns += B
        going = []
        chars = self.vocab.chars
        for b, s in enumerate(streams):
            s.x = int(nxt[b])
            want = s.params.logprobs
            lp = top = None
            if want is not None:
                logp = np.log(e[:, b]) - lse[b]
                lp, top = float(logp[s.x]), _top(logp, want, chars, s.x)
            going.append(self._append(s, chars[s.x], lp, top))
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
        s._text.append(char)
        s._logp.append((logprob, top))
        s._held += 1
        s.completion_tokens += 1
        stop = next((t for t in s.params.stop if char == t[-1] and "".join(s._text[-len(t) :]) == t), None)
        if stop is not None:  # the stop string is left out, with anything held that belongs to it
            keep = s._held - len(stop)
            s.completion_tokens -= len(stop)
            s._publish(self._release(s, keep), finish="stop")
            return False
        if s.completion_tokens >= s.params.max_tokens:
            s._publish(self._release(s, s._held), finish="length")
            return False
        hold = max((len(t) - 1 for t in s.params.stop), default=0)
        if s._held > hold:
            s._publish(self._release(s, s._held - hold))
        return True

    def _release(self, s: Stream, n: int) -> list[Token]:
        """The oldest ``n`` held characters as tokens."""
        start = len(s._text) - s._held
        out = []
        for i in range(start, start + max(0, n)):
            lp, top = s._logp[i]
            out.append(Token(s._text[i], lp, top, s._offset))
            s._offset += 1
        s._held -= max(0, n)
        return out


def seeded(seed: int | None, index: int) -> np.random.Generator:
    """A stream's generator: choice 0 of a request draws as ``charlm sample --seed`` does; the
    others from (seed, index), so the choices differ; no seed, fresh entropy."""
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng(seed if index == 0 else [seed, index])
