"""The HTTP side of ``charlm serve``: an OpenAI-compatible completions API over the engines, in
starlette. A thin shell: a request becomes ``Stream``s for the model it names, the engine's
tokens become OpenAI's response (or its server-sent events), and every refusal is one
``ApiError`` turned into OpenAI's error body with a 4xx status in one place (``_errors``).

    POST /v1/completions    prompt (a string, strings, or token ids), max_tokens, temperature,
                            top_p, top_k, n, best_of, seed, stop, logprobs (0-5), echo,
                            stream (+ stream_options.include_usage); one token = one character
    GET  /v1/models         the models served, by name
    POST /tokenize          {prompt} -> {count, max_model_len, tokens[, token_strs]}  (vLLM's shapes)
    POST /detokenize        {tokens} -> {prompt}
    GET  /tokenizer_info    the vocabulary: {tokenizer_class, vocab_size, vocab: {char: id}, ...}
    GET  /health            200 while serving
    GET  /                  the playground (playground.html)

Log-probabilities are under the model itself (temperature 1, no truncation), as ``charlm
score`` computes them: an echoed prompt's, summed after its first character (which has none),
equal ``charlm score`` of the rest with the first as context.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..config import MAX_TEMPERATURE
from ..text.vocab import Vocab, describe_chars
from ..use.sample import MAX_LENGTH
from .engine import MAX_BATCH, MAX_WAITING, Busy, Engine, Params, Piece, Stream, seeded

PLAYGROUND = Path(__file__).parent / "playground.html"


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; past a limit, a 4xx (or 503 when the engine is full)."""

    body_bytes: int = 1 << 20
    prompt_chars: int = 100_000
    max_tokens: int = 10_000
    n: int = 16
    streams_per_request: int = 64  # prompts x max(n, best_of)
    request_chars: int = 1_000_000  # over its streams, prompt and max_tokens each
    max_batch: int = MAX_BATCH
    max_waiting: int = MAX_WAITING


class ApiError(Exception):
    """A request the server refuses: OpenAI's error body, with ``status``."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error",
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        headers = {"Retry-After": "1"} if self.status == 503 else None
        return JSONResponse(body, status_code=self.status, headers=headers)


@dataclass
class Served:
    """One model the server answers for."""

    name: str
    checkpoint: object  # charlm.predict.checkpoint.Checkpoint
    engine: Engine

    @property
    def vocab(self):
        return self.checkpoint.vocab


# ---- reading a request ----------------------------------------------------------------------

def _short(value) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def _int(body: dict, key: str, default, lo: int, hi: int | None = None, none_is=None):
    v = body.get(key, default)
    if v is None:
        return none_is if none_is is not None else default
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        rng = f"an integer >= {lo}" if hi is None else f"an integer from {lo} to {hi:,}"
        raise ApiError(400, f"{key} must be {rng}, got {_short(v)}", key)
    return v


def _number(body: dict, key: str, default: float, lo: float, hi: float, lo_open: bool = False) -> float:
    v = body.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > lo if lo_open else v >= lo) or v > hi:
        raise ApiError(400, f"{key} must be a number {'>' if lo_open else '>='} {lo:g} and <= {hi:g}, got {_short(v)}",
                       key)
    return float(v)


def _prompts(body: dict, model: Served, limits: Limits) -> list[np.ndarray]:
    """The prompt(s) as id arrays: a string, a list of strings, a list of ids or of id lists."""
    p = body.get("prompt")
    if isinstance(p, str):
        prompts = [p]
    elif isinstance(p, list) and p and all(isinstance(x, str) for x in p):
        prompts = p
    elif isinstance(p, list) and p and all(isinstance(x, int) and not isinstance(x, bool) for x in p):
        prompts = [p]
    elif isinstance(p, list) and p and all(isinstance(x, list) for x in p):
        prompts = p
    else:
        raise ApiError(400, "prompt must be a string, a list of strings, or token ids (a list of integers, or of "
                            f"lists of them), got {_short(p)}", "prompt")
    if len(prompts) > limits.streams_per_request:  # counted before any is read
        raise ApiError(400, f"{len(prompts):,} prompt(s) is more than the {limits.streams_per_request} streams one "
                            "request may ask for", "prompt")
    out, V = [], len(model.vocab)
    for i, q in enumerate(prompts):
        where = "prompt" if len(prompts) == 1 else f"prompt {i}"
        if len(q) == 0:
            raise ApiError(400, f"{where} is empty: the first character is drawn given at least one", "prompt")
        if len(q) > limits.prompt_chars:
            raise ApiError(400, f"{where} has {len(q):,} characters; this server takes at most {limits.prompt_chars:,}",
                           "prompt")
        if isinstance(q, str):
            missing = model.vocab.unknown(q)
            if missing:
                raise ApiError(400, f"{where} has character(s) not in the model's vocabulary: "
                                    f"{describe_chars(missing)}", "prompt")
            out.append(model.vocab.encode(q).astype(np.int64))
        else:
            if not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < V for t in q):
                raise ApiError(400, f"{where}: token ids must be integers from 0 to {V - 1}", "prompt")
            out.append(np.array(q, dtype=np.int64))
    return out


def _params(body: dict, limits: Limits) -> Params:
    echo = body.get("echo", False)
    if not isinstance(echo, bool):
        raise ApiError(400, f"echo must be true or false, got {_short(echo)}", "echo")
    max_tokens = _int(body, "max_tokens", 16, 0, min(limits.max_tokens, MAX_LENGTH))
    if max_tokens == 0 and not echo:
        raise ApiError(400, "max_tokens must be at least 1 (0 only with echo, to score the prompt)", "max_tokens")
    stop = body.get("stop")
    stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not (isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) and 0 < len(s) <= 200 for s in stop)):
        raise ApiError(400, f"stop must be a string or a list of up to 4 strings of 1 to 200 characters, got "
                            f"{_short(body.get('stop'))}", "stop")
    logprobs = body.get("logprobs")
    if logprobs is not None:
        logprobs = _int(body, "logprobs", None, 0, 5)
    top_k = _int(body, "top_k", 0, -1, none_is=0)
    seed = _int(body, "seed", None, 0, (1 << 64) - 1, none_is=None) if body.get("seed") is not None else None
    return Params(max_tokens=max_tokens, temperature=_number(body, "temperature", 1.0, 0, MAX_TEMPERATURE),
                  top_p=_number(body, "top_p", 1.0, 0, 1, lo_open=True), top_k=max(top_k, 0), seed=seed,
                  stop=tuple(stop), logprobs=logprobs, echo=echo)


UNSUPPORTED = {"suffix": None, "logit_bias": None, "presence_penalty": 0, "frequency_penalty": 0}


def _completion_request(body: dict, app_state) -> tuple[Served, list[list[Stream]], dict]:
    """The model, the streams of each choice (best_of candidates each), and the options that
    shape the response."""
    model = _model(app_state, body.get("model"))
    limits = app_state.limits
    for key, default in UNSUPPORTED.items():
        if body.get(key, default) not in (default, {}):
            raise ApiError(400, f"{key} is not supported by charlm serve", key)
    prompts = _prompts(body, model, limits)
    params = _params(body, limits)
    n = _int(body, "n", 1, 1, limits.n)
    best_of = _int(body, "best_of", n, n, limits.n, none_is=n)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, f"stream must be true or false, got {_short(stream)}", "stream")
    if stream and best_of > n:
        raise ApiError(400, "best_of greater than n cannot stream: the best is known only at the end", "best_of")
    if len(prompts) * best_of > limits.streams_per_request:
        raise ApiError(400, f"{len(prompts)} prompt(s) x {best_of} completions is more than the "
                            f"{limits.streams_per_request} streams one request may ask for", "n")
    total = best_of * sum(len(ids) + params.max_tokens for ids in prompts)
    if total > limits.request_chars:
        raise ApiError(400, f"{total:,} characters in all (prompts and max_tokens, over {best_of} completion(s) "
                            f"each) is more than the {limits.request_chars:,} one request may ask for", "prompt")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "stream_options must be an object", "stream_options")
    choices = []
    for i, ids in enumerate(prompts):
        for j in range(n):
            index = i * n + j
            choices.append([Stream(ids, params, index, seeded(params.seed, index + k * len(prompts) * n))
                            for k in range(best_of // n + (j < best_of % n))])
    return model, choices, {"stream": stream, "usage": bool(options.get("include_usage")), "n": n}


def _model(app_state, name) -> Served:
    if name is None or name == "":
        return app_state.models[0]
    for m in app_state.models:
        if m.name == name:
            return m
    raise ApiError(404, f"the model {_short(name)} is not served here; models: "
                        f"{', '.join(m.name for m in app_state.models)}", "model", code="model_not_found")


async def _json_body(request: Request, limits: Limits) -> dict:
    """The request's JSON object; 413, 415 and 400 for what is not one."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise ApiError(415, "the body must be JSON, sent with Content-Type: application/json")
    declared = request.headers.get("content-length")
    size = int(declared) if declared is not None and declared.isdigit() else 0
    raw, seen = bytearray(), 0
    if size <= DRAIN_BYTES:  # a body too big is still read (and dropped) up to DRAIN_BYTES: a
        async for chunk in request.stream():  # connection closed with a body unread is reset, and
            seen += len(chunk)  # the client might never see the 413
            if seen <= limits.body_bytes:
                raw += chunk
            elif seen > DRAIN_BYTES:
                break
    if max(size, seen) > limits.body_bytes:
        raise ApiError(413, f"the body is over {limits.body_bytes:,} bytes, the most this server takes")
    try:
        body = json.loads(raw.decode("utf-8"))
        # \ud800 and the like parse, but are not text: refused here, not met later by encoders
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "the body holds a lone surrogate (an escape such as \\ud800): not text") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # ValueError: JSON's, and ints past 4,300 digits
        raise ApiError(400, f"the body is not valid JSON ({type(e).__name__})") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


DRAIN_BYTES = 16 << 20  # the most of a refused body that is read


# ---- answering ------------------------------------------------------------------------------

STREAM_INTERVAL = 0.02  # seconds at least between two chunks of one choice: its characters since are sent together


def _logprobs(piece: Piece) -> dict:
    return {"tokens": list(piece.text), "token_logprobs": piece.logprobs, "top_logprobs": piece.tops,
            "text_offset": list(range(piece.offset, piece.offset + len(piece.text)))}


async def _drain(stream: Stream, loop: asyncio.AbstractEventLoop, interval: float = 0.0):
    """What ``stream`` releases as it comes, an async generator of (Piece or None, done): all
    that piled up at each wake, at most one piece per ``interval`` seconds."""
    ready = asyncio.Event()

    def wake():
        loop.call_soon_threadsafe(ready.set)

    while True:
        piece, done = stream.take()
        if piece is not None or done:
            yield piece, done
        if done:
            return
        if interval:
            await asyncio.sleep(interval)
            continue  # take what came meanwhile
        ready.clear()
        if stream.sleep(wake):
            await ready.wait()


def _whole(stream: Stream) -> Piece:
    """All a finished stream released, as one piece."""
    want = stream.params.logprobs is not None
    return Piece("".join(stream.chars), 0, stream.logps if want else None, stream.tops if want else None)


def _best(candidates: list[Stream], n: int) -> list[Stream]:
    """The n candidates with the highest mean log-probability per generated character, best
    first (best_of, as OpenAI's: the best n of all a prompt's candidates)."""
    def mean(s):
        lps = [lp for lp in s.logps[len(s.logps) - s.completion_tokens :] if lp is not None]
        return sum(lps) / len(lps) if lps else -float("inf")
    return sorted(candidates, key=mean, reverse=True)[:n]


def _check_error(streams: list[Stream]) -> None:
    for s in streams:
        if s.error is not None:
            raise ApiError(500, f"the model failed on this request: {s.error}", kind="server_error")


async def completions(request: Request) -> Response:
    state = request.app.state
    body = await _json_body(request, state.limits)
    model, choices, opts = _completion_request(body, state)
    if opts["usage"] and not opts["stream"]:
        opts["usage"] = False
    want_logprobs = choices[0][0].params.logprobs is not None
    streams = [s for group in choices for s in group]
    if len(choices[0]) > 1 and not want_logprobs:  # best_of ranks by log-probability: keep them internally
        for s in streams:
            s.params = replace(s.params, logprobs=0)
    try:
        model.engine.submit(streams)
    except Busy as e:
        raise ApiError(503, f"the server is busy ({e}); try again", kind="server_error", code="overloaded") from None
    rid, created = f"cmpl-{secrets.token_hex(12)}", int(time.time())
    prompt_tokens = sum(len(g[0].prompt) for g in choices[:: opts["n"]])
    head = {"id": rid, "object": "text_completion", "created": created, "model": model.name}
    loop = asyncio.get_running_loop()
    if opts["stream"]:
        return StreamingResponse(_events(head, streams, loop, want_logprobs, opts["usage"], prompt_tokens),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    finished = asyncio.ensure_future(asyncio.gather(*(_finished(s, loop) for s in streams)))
    left = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({finished, left}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for s in streams:
            s.cancelled = True
        for task in (finished, left):
            task.cancel()
    if finished.cancelled():  # the client left first: nobody to answer
        return Response(status_code=499)
    _check_error(streams)
    out, n = [], opts["n"]
    for i in range(0, len(choices), n):  # a prompt's choices: its n best of all its candidates
        pool = [s for group in choices[i : i + n] for s in group]
        chosen = _best(pool, n) if len(pool) > n else [group[0] for group in choices[i : i + n]]
        for group, s in zip(choices[i : i + n], chosen):
            whole = _whole(s)
            out.append({"text": whole.text, "index": group[0].index,
                        "logprobs": _logprobs(whole) if want_logprobs else None, "finish_reason": s.finish_reason})
    made = sum(s.completion_tokens for s in streams)
    return JSONResponse({**head, "choices": out, "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": made,
                                                          "total_tokens": prompt_tokens + made}})


async def _disconnected(request: Request) -> None:
    """Until the client goes away (its body is read: what comes next is only that)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _finished(stream: Stream, loop) -> None:
    """Until ``stream`` is finished: woken only then, not for each character."""
    ready = asyncio.Event()

    def wake():
        loop.call_soon_threadsafe(ready.set)

    while stream.finish_reason is None and stream.error is None:
        ready.clear()
        if stream.sleep(wake):
            await ready.wait()
        stream.take()  # what it released is read at the end: mark it taken so the next sleep waits


async def _events(head: dict, streams: list[Stream], loop, want_logprobs: bool, usage: bool, prompt_tokens: int):
    """Server-sent events: a chunk per batch of new characters of a choice, its finish_reason
    on the last, optionally the usage, then ``data: [DONE]``."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(s: Stream):
        async for piece, done in _drain(s, loop, STREAM_INTERVAL):
            await queue.put((s, piece, done))

    tasks = [asyncio.create_task(pump(s)) for s in streams]
    try:
        left = len(streams)
        while left:
            s, piece, done = await queue.get()
            left -= done
            if s.error is not None:
                yield _sse({"error": {"message": f"the model failed on this request: {s.error}", "type": "server_error",
                                      "param": None, "code": None}})
                continue
            piece = piece or Piece("", len(s.chars), [] if want_logprobs else None, [] if want_logprobs else None)
            choice = {"text": piece.text, "index": s.index, "logprobs": _logprobs(piece) if want_logprobs else None,
                      "finish_reason": s.finish_reason if done else None}
            yield _sse({**head, "choices": [choice]})
        if usage:
            made = sum(s.completion_tokens for s in streams)
            yield _sse({**head, "choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": made,
                                                         "total_tokens": prompt_tokens + made}})
        yield b"data: [DONE]\n\n"
    finally:  # the client left, or everything was sent: the engine drops what is left
        for s in streams:
            s.cancelled = True
        for t in tasks:
            t.cancel()


def _sse(obj) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, allow_nan=False).encode("utf-8") + b"\n\n"


async def models(request: Request) -> Response:
    created = int(request.app.state.started)
    return JSONResponse({"object": "list", "data": [
        {"id": m.name, "object": "model", "created": created, "owned_by": "charlm",
         "max_model_len": request.app.state.limits.prompt_chars + request.app.state.limits.max_tokens}
        for m in request.app.state.models]})


async def tokenize(request: Request) -> Response:
    state = request.app.state
    body = await _json_body(request, state.limits)
    model = _model(state, body.get("model"))
    if not isinstance(body.get("prompt"), str):
        raise ApiError(400, f"prompt must be a string, got {_short(body.get('prompt'))}", "prompt")
    [ids] = _prompts({"prompt": body["prompt"]}, model, state.limits) if body["prompt"] else [np.zeros(0, np.int64)]
    out = {"count": len(ids), "max_model_len": state.limits.prompt_chars + state.limits.max_tokens,
           "tokens": ids.tolist()}
    if body.get("return_token_strs"):
        out["token_strs"] = [model.vocab.chars[i] for i in ids.tolist()]
    return JSONResponse(out)


async def detokenize(request: Request) -> Response:
    state = request.app.state
    body = await _json_body(request, state.limits)
    model = _model(state, body.get("model"))
    tokens, V = body.get("tokens"), len(model.vocab)
    if not (isinstance(tokens, list) and all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < V
                                             for t in tokens)):
        raise ApiError(400, f"tokens must be a list of integers from 0 to {V - 1}", "tokens")
    return JSONResponse({"prompt": model.vocab.decode(tokens)})


async def tokenizer_info(request: Request) -> Response:
    model = _model(request.app.state, request.query_params.get("model"))
    chars = model.vocab.chars
    return JSONResponse({"tokenizer_class": f"{Vocab.__module__}.{Vocab.__name__}", "model": model.name, "vocab_size": len(chars),
                         "vocab": {c: i for i, c in enumerate(chars)}, "unk_token": None, "bos_token": None,
                         "eos_token": None, "model_max_length": request.app.state.limits.prompt_chars,
                         "description": "one token per character; ids in the order of the vocabulary"})


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def playground(request: Request) -> Response:
    return HTMLResponse(PLAYGROUND.read_text(encoding="utf-8"))


async def no_icon(request: Request) -> Response:
    return Response(status_code=204)  # what a browser asks for beside the playground


def _errors(handler):
    """Every refusal as OpenAI's error body; nothing else reaches a client (a bug is a 500 with
    its one line, and the server goes on)."""
    async def wrapped(request: Request) -> Response:
        try:
            _authorise(request)
            return await handler(request)
        except ApiError as e:
            return e.response()
        except Exception as e:  # noqa: BLE001 (one line to the client, the traceback to the log)
            request.app.state.log_exception(e)
            return ApiError(500, f"internal error: {type(e).__name__}", kind="server_error").response()
    return wrapped


OPEN = ("/health", "/")  # answered without the API key: the playground asks for it itself


def _authorise(request: Request) -> None:
    key = request.app.state.api_key
    if key is None or request.url.path in OPEN:
        return
    given = request.headers.get("authorization", "")
    token = given[7:] if given[:7].lower() == "bearer " else ""
    if not hmac.compare_digest(token.encode(), key.encode()):
        raise ApiError(401, "a valid API key is needed: Authorization: Bearer KEY", kind="authentication_error",
                       code="invalid_api_key")


LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "::1", "[::1]"]


def build_app(served: list[Served], limits: Limits = Limits(), api_key: str | None = None,
              cors: list[str] = (), loopback: bool = True, log_exception=None, host: str | None = None) -> Starlette:
    """The ASGI application. ``loopback``: the server listens only on this machine, so only
    requests that name it as their Host (this machine's names, or ``host``, the address it
    listens on) are answered: a page elsewhere cannot reach it by a DNS name that points here."""
    routes = [Route("/v1/completions", _errors(completions), methods=["POST"]),
              Route("/v1/models", _errors(models), methods=["GET"]),
              Route("/tokenize", _errors(tokenize), methods=["POST"]),
              Route("/detokenize", _errors(detokenize), methods=["POST"]),
              Route("/tokenizer_info", _errors(tokenizer_info), methods=["GET"]),
              Route("/health", _errors(health), methods=["GET"]),
              Route("/", _errors(playground), methods=["GET"]),
              Route("/favicon.ico", no_icon, methods=["GET"])]
    middleware = []
    if loopback:
        mine = [host.strip("[]"), f"[{host.strip('[]')}]"] if host else []
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_HOSTS + mine))
    if cors:
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(cors), allow_methods=["GET", "POST"],
                                     allow_headers=["*"]))  # the openai JS client adds X-Stainless-* headers
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={
        404: lambda request, exc: ApiError(404, f"no such endpoint: {request.url.path[:60]}").response(),
        405: lambda request, exc: ApiError(405, f"{request.method} is not allowed here").response()})
    app.state.models, app.state.limits, app.state.api_key = served, limits, api_key
    app.state.started = time.time()
    app.state.log_exception = log_exception or (lambda e: None)
    return app
