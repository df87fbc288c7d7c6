"""``charlm serve``: the OpenAI-compatible API checked with the real ``openai`` client and raw
HTTP, many clients at once, limits and refusals, keys and origins, SIGTERM, and the playground
in headless Chromium."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from charlm.predict.checkpoint import BUNDLED, load_checkpoint  # noqa: E402
from charlm.serve import model_names  # noqa: E402
from charlm.serve.api import Limits, Served, build_app  # noqa: E402
from charlm.serve.engine import Engine  # noqa: E402
from charlm.use.sample import draw_weights, generate  # noqa: E402
from charlm.use.score import explain, score_texts  # noqa: E402
from tests.helpers import watched  # noqa: E402

CHARLM = Path(sys.executable).parent / "charlm"


class Server:
    """An app served by uvicorn in a thread of this process, on a free port of 127.0.0.1."""

    def __init__(self, served, **kw):
        self.served = served
        self.app = build_app(served, **kw)
        for m in served:
            m.engine.start()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                break
            time.sleep(0.02)

    def close(self):
        self.server.should_exit = True
        self.thread.join(10)
        for m in self.served:
            m.engine.stop()

    def client(self, key="unused"):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=300)


def post(url, body, headers=None, raw=None):
    """(status, parsed JSON or text) of a POST; never raises on an HTTP error."""
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            text = r.read().decode()
            status, ctype = r.status, r.headers.get("content-type", "")
    except urllib.error.HTTPError as e:
        text, status, ctype = e.read().decode(), e.code, e.headers.get("content-type", "")
    return status, json.loads(text) if "json" in ctype else text


def served_models(mixed_run, limits=None):
    limits, out = limits or Limits(), []
    for name, path in zip(model_names([None, str(mixed_run)]), [BUNDLED, mixed_run]):
        ck = load_checkpoint(path, with_training_state=False)
        out.append(Served(name, ck, Engine(ck.build_predictor(), ck.vocab, limits.max_batch, limits.max_waiting)))
    return out


@pytest.fixture(scope="module")
def server(mixed_run):
    s = Server(served_models(mixed_run))
    yield s
    s.close()


# ---- the API, through the openai client ------------------------------------------------------

def test_a_completion_is_what_charlm_sample_draws_with_the_same_seed(server):
    ck = load_checkpoint(BUNDLED, with_training_state=False)
    r = server.client().completions.create(model="bundled", prompt="ROMEO:", max_tokens=120, temperature=0.8,
                                           top_p=0.95, seed=7)
    [want] = generate(ck.build_predictor(), ck.vocab, "ROMEO:", 120, temperature=0.8, top_p=0.95, seed=7)
    assert r.choices[0].text == want.text and r.choices[0].finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (6, 120, 126)
    assert r.object == "text_completion" and r.id.startswith("cmpl-") and r.model == "bundled"


def test_a_stream_is_the_same_text_in_pieces_ending_done(server):
    client = server.client()
    whole = client.completions.create(model="bundled", prompt="JULIET:", max_tokens=300, seed=3).choices[0].text
    pieces, reasons = [], []
    for chunk in client.completions.create(model="bundled", prompt="JULIET:", max_tokens=300, seed=3, stream=True):
        pieces += [c.text for c in chunk.choices]
        reasons += [c.finish_reason for c in chunk.choices]
    assert "".join(pieces) == whole and reasons[-1] == "length" and set(reasons[:-1]) <= {None}
    req = urllib.request.Request(server.url + "/v1/completions", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"prompt": "A", "max_tokens": 5, "stream": True,
                                                  "stream_options": {"include_usage": True}}).encode())
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [e for e in r.read().decode().split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["usage"]["completion_tokens"] == 5


@pytest.mark.parametrize("model", ["bundled", "small"])
def test_echoed_log_probs_sum_to_charlm_score(server, mixed_run, model):
    """prompt = context + text: the text's log-probabilities add up to charlm score's (a mixture too)."""
    ck = load_checkpoint(BUNDLED if model == "bundled" else mixed_run, with_training_state=False)
    text = "To be, or not" if model == "bundled" else "hello hero hole"
    r = server.client().completions.create(model=model, prompt="\n" + text, max_tokens=0, echo=True, logprobs=3)
    lp = r.choices[0].logprobs
    assert r.choices[0].text == "\n" + text and lp.tokens == list("\n" + text)
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None and lp.text_offset == list(range(len(text) + 1))
    want = score_texts(ck.build_predictor(), ck.vocab, [text])[0].log_prob_nats
    assert abs(sum(lp.token_logprobs[1:]) - want) < 1e-4
    assert all(3 <= len(t) <= 4 for t in lp.top_logprobs[1:])  # the top 3, and the character itself
    assert all(max(t.values()) >= p for t, p in zip(lp.top_logprobs[1:], lp.token_logprobs[1:]))


def test_logprobs_of_generated_characters_are_the_models(server):
    ck = load_checkpoint(BUNDLED, with_training_state=False)
    r = server.client().completions.create(model="bundled", prompt="KING", max_tokens=40, seed=1, logprobs=2,
                                           temperature=1.3)
    c = r.choices[0]
    want = score_texts(ck.build_predictor(), ck.vocab, [c.text], context="KING")[0].log_prob_nats
    assert abs(sum(c.logprobs.token_logprobs) - want) < 1e-4
    assert c.logprobs.text_offset == list(range(40)) and "".join(c.logprobs.tokens) == c.text


def test_n_list_prompts_stop_and_greedy(server):
    client = server.client()
    r = client.completions.create(model="bundled", prompt=["ROMEO:", "JULIET:"], n=3, max_tokens=30, seed=5)
    assert [c.index for c in r.choices] == list(range(6))
    assert len({c.text for c in r.choices[:3]}) == 3  # the choices of one prompt differ
    r = client.completions.create(model="bundled", prompt="ROMEO:\n", max_tokens=400, stop=["\n\n", ":"], seed=2)
    c = r.choices[0]
    assert c.finish_reason == "stop" and "\n\n" not in c.text and ":" not in c.text and len(c.text) < 400
    g1, g2 = (client.completions.create(model="bundled", prompt="The ", max_tokens=50, temperature=0).choices[0].text
              for _ in range(2))
    ck = load_checkpoint(BUNDLED, with_training_state=False)
    assert g1 == g2 == generate(ck.build_predictor(), ck.vocab, "The ", 50, greedy=True)[0].text
    ids = ck.vocab.encode("ROMEO:").tolist()
    r = client.completions.create(model="bundled", prompt=ids, max_tokens=20, seed=7)  # token ids as the prompt
    assert r.choices[0].text == client.completions.create(model="bundled", prompt="ROMEO:", max_tokens=20,
                                                          seed=7).choices[0].text


def test_best_of_returns_the_n_most_likely_of_its_candidates(server):
    """best_of=4, n=2 draws the four completions n=4 draws (the same seed) and returns the two
    with the highest mean log-probability, as OpenAI's best_of does."""
    def mean(c):
        return sum(c.logprobs.token_logprobs) / len(c.logprobs.token_logprobs)

    for seed in range(1, 7):
        four = server.client().completions.create(model="bundled", prompt="ROMEO:", max_tokens=20, n=4, seed=seed,
                                                  logprobs=0).choices
        best = server.client().completions.create(model="bundled", prompt="ROMEO:", max_tokens=20, n=2, best_of=4,
                                                  seed=seed, logprobs=0).choices
        want = sorted(four, key=mean, reverse=True)[:2]
        assert [c.text for c in best] == [c.text for c in want], seed
        assert [c.index for c in best] == [0, 1]


def test_best_of_keeps_the_most_likely(server):
    r = server.client().completions.create(model="bundled", prompt="ROMEO:", max_tokens=40, best_of=4, n=1, seed=3,
                                           logprobs=0)
    best = r.choices[0]
    mean = sum(best.logprobs.token_logprobs) / 40
    single = server.client().completions.create(model="bundled", prompt="ROMEO:", max_tokens=40, seed=3, logprobs=0)
    assert mean >= sum(single.choices[0].logprobs.token_logprobs) / 40 - 1e-9


@pytest.mark.parametrize("kwargs, says", [
    ({"prompt": "café"}, "'é' (U+00E9)"),
    ({"prompt": "A", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "A", "max_tokens": 10**9}, "max_tokens"),
    ({"prompt": "A", "n": 0}, "n must be"),
    ({"prompt": "A", "n": 99}, "n must be"),
    ({"prompt": "A", "logprobs": 6}, "logprobs"),
    ({"prompt": "A", "temperature": -1}, "temperature"),
    ({"prompt": "A", "top_p": 0}, "top_p"),
    ({"prompt": "A", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"prompt": "A", "stop": ""}, "stop"),
    ({"prompt": "A", "seed": -3}, "seed"),
    ({"prompt": ""}, "prompt is empty"),
    ({"prompt": "A" * 100_001}, "at most 100,000"),
    ({"prompt": [10**6]}, "token ids"),
    ({"prompt": "A", "suffix": "x"}, "suffix is not supported"),
    ({"prompt": "A", "best_of": 2, "stream": True}, "best_of"),
])
def test_a_bad_request_raises_bad_request_error_naming_the_problem(server, kwargs, says):
    with pytest.raises(openai.BadRequestError) as e:
        server.client().completions.create(model="bundled", **kwargs)
    assert says in e.value.message and e.value.status_code == 400
    assert e.value.body["type"] == "invalid_request_error"
    # and the server goes on serving
    assert server.client().completions.create(model="bundled", prompt="A", max_tokens=3).choices[0].text


def test_an_unknown_model_is_404_naming_the_models(server):
    with pytest.raises(openai.NotFoundError) as e:
        server.client().completions.create(model="nope", prompt="A", max_tokens=3)
    assert "bundled, small" in e.value.message


@pytest.mark.parametrize("raw, ctype, status", [(b"{not json", "application/json", 400),
                                                (b"[1, 2]", "application/json", 400),
                                                (b"{}", "text/plain", 415),
                                                (b"[" * 100_000 + b"]" * 100_000, "application/json", 400),
                                                (b" " * ((1 << 20) + 100), "application/json", 413),
                                                # past Python's 4,300 digits int() refuses the number
                                                (b'{"prompt": "A", "max_tokens": 1' + b"0" * 5000 + b"}",
                                                 "application/json", 400),
                                                # lone surrogates: JSON escapes that are not text
                                                (b'{"prompt": "\\ud800", "max_tokens": 1}', "application/json", 400),
                                                (b'{"prompt": "A", "n": "\\ud800"}', "application/json", 400),
                                                (b'{"prompt": "A", "model": "\\udfff"}', "application/json", 400),
                                                (b'{"prompt": {"\\ud800": 1}}', "application/json", 400)])
def test_bodies_that_are_not_a_request_are_4xx_with_openais_error_body(server, raw, ctype, status):
    code, body = post(server.url + "/v1/completions", None, {"Content-Type": ctype}, raw=raw)
    assert code == status and set(body["error"]) == {"message", "type", "param", "code"}, body
    code, body = post(server.url + "/tokenize", None, {"Content-Type": ctype}, raw=raw.replace(b'"max_tokens"', b'"x"'))
    assert 400 <= code < 500 and set(body["error"]) == {"message", "type", "param", "code"}, body


def test_a_request_of_too_many_prompts_is_refused_before_they_are_read(server):
    """200,000 one-character prompts fit in the body limit; counting them first answers at once
    instead of holding every client's stream while each is checked."""
    t = time.perf_counter()
    code, body = post(server.url + "/v1/completions", {"prompt": ["a"] * 200_000, "max_tokens": 1})
    assert code == 400 and "200,000 prompt(s)" in body["error"]["message"]
    assert time.perf_counter() - t < 1.0


def test_a_request_too_large_in_all_is_refused(server):
    """Each prompt within its limit, but prompts x streams x characters past the request's:
    one request would hold the engine for minutes and answer with a gigabyte of log-probs."""
    code, body = post(server.url + "/v1/completions", {"prompt": ["A" * 100_000] * 10, "n": 6, "max_tokens": 0,
                                                       "echo": True, "logprobs": 5})
    assert code == 400 and "characters in all" in body["error"]["message"] and body["error"]["param"] == "prompt"


def test_models_health_tokenize_detokenize_tokenizer_info(server):
    models = server.client().models.list()
    assert [m.id for m in models.data] == ["bundled", "small"]
    with urllib.request.urlopen(server.url + "/health") as r:
        assert r.status == 200
    code, body = post(server.url + "/tokenize", {"model": "bundled", "prompt": "ROMEO:", "return_token_strs": True})
    ck = load_checkpoint(BUNDLED, with_training_state=False)
    assert code == 200 and body["tokens"] == ck.vocab.encode("ROMEO:").tolist() and body["count"] == 6
    assert body["token_strs"] == list("ROMEO:") and body["max_model_len"] > 0
    code, body = post(server.url + "/detokenize", {"model": "bundled", "tokens": ck.vocab.encode("Hi!").tolist()})
    assert code == 200 and body == {"prompt": "Hi!"}
    assert post(server.url + "/tokenize", {"prompt": "é"})[0] == 400
    assert post(server.url + "/detokenize", {"tokens": [999]})[0] == 400
    with urllib.request.urlopen(server.url + "/tokenizer_info?model=small") as r:
        info = json.loads(r.read())
    assert info["vocab_size"] == len(info["vocab"]) and info["vocab"]["h"] >= 0


# ---- many clients at once ----------------------------------------------------------------------

def test_clients_at_once_each_get_what_they_would_alone(server):
    """16 streaming and plain clients, each with its own seed and settings, at once: the same
    texts as one at a time (batched arithmetic may flip a rare character: at most one text)."""
    client = server.client()
    asks = [dict(prompt=p, max_tokens=150, seed=s, temperature=t, top_p=q, stream=st)
            for s, (p, t, q, st) in enumerate([("ROMEO:", 0.8, 1.0, True), ("JULIET:", 1.0, 0.9, False),
                                               ("KING", 1.2, 1.0, True), ("The ", 0.5, 0.8, False)] * 4)]

    def ask(a):
        r = client.completions.create(model="bundled", **a)
        return "".join(c.choices[0].text for c in r) if a["stream"] else r.choices[0].text

    alone = [ask(a) for a in asks]
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(ask, asks))
    differ = [i for i, (a, b) in enumerate(zip(alone, together)) if a != b]
    assert len(differ) <= 1, differ
    assert len(set(alone)) == 16
    assert server.served[0].engine.step_columns > server.served[0].engine.steps  # streams did share steps


def test_per_column_draws_are_the_single_settings_draws():
    rng = np.random.default_rng(0)
    e = np.exp(rng.normal(size=(40, 6)))
    e /= e.max(axis=0)
    t, k, p = np.array([0.5, 1.0, 1.7, 1.0, 1.0, 0.9]), np.array([0, 5, 0, 40, 3, 0]), np.array([1, 1, .8, .5, 1, .9])
    together = draw_weights(e, t, k, p)
    for j in range(6):
        alone = draw_weights(e[:, j : j + 1].copy(), float(t[j]), int(k[j]) or None, float(p[j]))
        np.testing.assert_allclose(together[:, j : j + 1], alone, rtol=1e-15)


def test_a_full_server_answers_503_and_keeps_serving(mixed_run):
    s = Server(served_models(mixed_run, Limits(max_batch=2, max_waiting=2)))
    try:
        client = s.client()
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(client.completions.create, model="bundled", prompt="A", max_tokens=1000)
                       for _ in range(8)]
            outcomes = []
            for f in futures:
                try:
                    outcomes.append(len(f.result().choices[0].text))
                except openai.InternalServerError as e:
                    outcomes.append(e.status_code)
        assert 503 in outcomes and 1000 in outcomes
        assert client.completions.create(model="bundled", prompt="A", max_tokens=3).choices[0].text
    finally:
        s.close()


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_frees_its_streams(mixed_run, stream):
    s = Server(served_models(mixed_run))
    engine = s.served[0].engine
    try:
        body = json.dumps({"model": "bundled", "prompt": "ROMEO:", "max_tokens": 10_000, "n": 8,
                           "stream": stream}).encode()
        with socket.create_connection(("127.0.0.1", int(s.url.rsplit(":", 1)[1]))) as c:
            c.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            deadline = time.monotonic() + 30
            while engine.in_flight < 8 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert engine.in_flight == 8
        deadline = time.monotonic() + 5  # 8 x 10,000 characters take far longer than this
        while engine.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.in_flight == 0
    finally:
        s.close()


def test_cancelled_streams_waiting_for_the_model_do_not_fill_the_queue():
    """Clients that left while their streams waited for a place in the batch: the queue counts
    only streams someone still waits for."""
    from charlm.serve.engine import Busy, Params, Stream, seeded

    ck = load_checkpoint(BUNDLED, with_training_state=False)
    engine = Engine(ck.build_predictor(), ck.vocab, max_batch=1, max_waiting=4)  # not started: nothing moves
    prompt = ck.vocab.encode("A").astype("int64")
    waiting = [Stream(prompt, Params(max_tokens=5), i, seeded(None, i)) for i in range(4)]
    engine.submit(waiting)
    with pytest.raises(Busy):
        engine.submit([Stream(prompt, Params(max_tokens=5), 9, seeded(None, 9))])
    for st in waiting:
        st.cancelled = True
    engine.submit([Stream(prompt, Params(max_tokens=5), 9, seeded(None, 9))])
    assert engine.in_flight == 1


def test_a_model_is_named_by_its_run_and_where_two_share_a_name_by_the_checkpoint_served(tmp_path):
    """A run directory serves best.npz, else last.npz: where two runs share a name, the one
    with only last.npz is run/last, not run/best; the same checkpoint named twice is one line."""
    from charlm.errors import CharlmError

    only_last, with_best = tmp_path / "a" / "run", tmp_path / "b" / "run"
    for d, f in ((only_last, "last.npz"), (with_best, "best.npz")):
        d.mkdir(parents=True)
        (d / f).write_bytes(b"")
    assert model_names([None, str(only_last)]) == ["bundled", "run"]
    assert model_names([str(only_last), str(with_best)]) == ["run/last", "run/best"]
    with pytest.raises(CharlmError, match="name the same model"):
        model_names([str(only_last), str(only_last / "last.npz")])


# ---- keys, origins, hosts ------------------------------------------------------------------------

def test_an_api_key_protects_everything_but_health_and_the_page(mixed_run):
    s = Server(served_models(mixed_run), api_key="sesame")
    try:
        with pytest.raises(openai.AuthenticationError):
            s.client("wrong").completions.create(model="bundled", prompt="A", max_tokens=2)
        assert post(s.url + "/tokenize", {"prompt": "A"})[0] == 401
        assert s.client("sesame").completions.create(model="bundled", prompt="A", max_tokens=2).choices[0].text
        with urllib.request.urlopen(s.url + "/health") as r:
            assert r.status == 200
        with urllib.request.urlopen(s.url + "/") as r:
            assert b"charlm playground" in r.read()
    finally:
        s.close()


def test_no_cross_origin_access_unless_allowed(mixed_run, server):
    origin = {"Origin": "http://evil.example"}
    req = urllib.request.Request(server.url + "/v1/models", headers=origin)
    with urllib.request.urlopen(req) as r:
        assert "access-control-allow-origin" not in {k.lower() for k in r.headers}
    s = Server(served_models(mixed_run), cors=["http://good.example"])
    try:
        for who, allowed in (("http://good.example", True), ("http://evil.example", False)):
            with urllib.request.urlopen(urllib.request.Request(s.url + "/v1/models", headers={"Origin": who})) as r:
                assert (r.headers.get("access-control-allow-origin") == who) == allowed
        # the openai JavaScript client sends headers of its own (X-Stainless-*): a preflight allows them
        asked = "x-stainless-os,x-stainless-lang,content-type,authorization"
        req = urllib.request.Request(s.url + "/v1/completions", method="OPTIONS", headers={
            "Origin": "http://good.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": asked})
        with urllib.request.urlopen(req) as r:
            allowed = r.headers.get("access-control-allow-headers", "").lower()
            assert r.status == 200 and all(h in allowed for h in asked.split(","))
    finally:
        s.close()


def test_a_loopback_server_answers_only_requests_for_this_machine(server):
    """A page elsewhere that points a DNS name at 127.0.0.1 sends that name as the Host."""
    req = urllib.request.Request(server.url + "/v1/models", headers={"Host": "attacker.example"})
    try:
        urllib.request.urlopen(req)
        status = 200
    except urllib.error.HTTPError as e:
        status = e.code
    assert status == 400


def test_another_loopback_address_is_served_at_the_address_it_prints():
    p = run_serve("--host", "127.0.0.2", "--port", "0")
    try:
        url = wait_for_url(p)
        with urllib.request.urlopen(url + "/health", timeout=30) as r:
            assert r.status == 200
    finally:
        p.terminate()
        p.communicate(timeout=60)


@pytest.mark.parametrize("key", ["clé", " sesame", "sesame "])
def test_a_key_no_client_could_send_is_refused(key):
    """HTTP headers are Latin-1 and lose their outer spaces: such a key never matches."""
    assert "printable ASCII" in refused("--port", "0", "--api-key", key)


def run_serve(*args, env=None):
    return subprocess.Popen([str(CHARLM), "serve", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1", **(env or {})})


def refused(*args, env=None) -> str:
    """The one line ``charlm serve ARGS`` ends with when it refuses to start (a server that
    starts instead is killed, and the test fails)."""
    p = run_serve(*args, env=env)
    try:
        _, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise AssertionError(f"charlm serve {' '.join(map(str, args))} started instead of refusing") from None
    assert p.returncode == 1 and "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def test_another_host_needs_an_api_key(tmp_path):
    assert refused("--host", "0.0.0.0", "--port", "0", env={"CHARLM_API_KEY": ""}).startswith(
        "Error: --host 0.0.0.0 answers every machine")
    for key in ("", "  "):  # an empty key would let every request in: refused, wherever it listens
        for host in ("0.0.0.0", "127.0.0.1"):
            line = refused("--host", host, "--port", "0", "--api-key", key, env={"CHARLM_API_KEY": "k"})
            assert line == "Error: the API key (--api-key or CHARLM_API_KEY) is empty: a key needs characters other " \
                "than spaces"
    assert "is empty" in refused("--host", "0.0.0.0", "--port", "0", env={"CHARLM_API_KEY": " "})


def test_a_port_in_use_is_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        line = refused("--port", s.getsockname()[1])
    assert line.startswith("Error: cannot listen on 127.0.0.1:")


def wait_for_url(p) -> str:
    """The address ``charlm serve`` says it serves at (its line on stderr)."""
    import re

    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline and p.poll() is None, p.stderr.read()
        found = re.search(r"serving .* at (http://\S+?): the OpenAI API", p.stderr.readline())
        if found:
            return found.group(1)


def test_sigterm_finishes_the_requests_in_flight_and_exits_0():
    p = run_serve("--port", "0", "--api-key", "k")
    try:
        url = wait_for_url(p)
        client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
        got = []
        t = threading.Thread(target=lambda: got.append(client.completions.create(
            model="bundled", prompt="ROMEO:", max_tokens=3000, stream=False)))
        t.start()
        time.sleep(1.0)
        p.send_signal(signal.SIGTERM)
        t.join(120)
        assert got and len(got[0].choices[0].text) == 3000 and got[0].choices[0].finish_reason == "length"
        assert p.wait(60) == 0
    finally:
        if p.poll() is None:
            p.kill()


# ---- the playground, in headless Chromium ----------------------------------------------------------

def test_the_playground_streams_suggests_and_colours(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1100, "height": 1000})
    errors, requests = watched(page)
    page.goto(server.url + "/")
    page.wait_for_selector("#next button")
    assert page.locator("#model option").count() == 2
    # what comes next: five characters with the probabilities the API gives
    buttons = page.locator("#next button")
    assert buttons.count() == 5
    probs = [float(buttons.nth(i).get_attribute("data-p")) for i in range(5)]
    r = server.client().completions.create(model="bundled", prompt="ROMEO:", max_tokens=1, temperature=0, logprobs=5)
    want = sorted(np.exp(list(r.choices[0].logprobs.top_logprobs[0].values())), reverse=True)[:5]
    np.testing.assert_allclose(probs, want, rtol=1e-6)
    first = buttons.nth(0).get_attribute("data-char")
    buttons.nth(0).click()
    assert page.locator("#prime").input_value() == "ROMEO:" + first
    # a sample streams in: the output grows while the status says so
    page.locator("#length").fill("1500")
    page.locator("#generate").click()
    lengths = []
    for _ in range(400):
        lengths.append(len(page.locator("#output").inner_text()))
        if "(length)" in page.locator("#status").inner_text():
            break
        page.wait_for_timeout(10)
    assert page.locator("#status").inner_text() == "1500 characters (length)"
    assert len({n for n in lengths if 7 < n < 1507}) >= 3, lengths[:20]
    assert page.locator("#output").inner_text().startswith("ROMEO:" + first)
    # the score box: each character's colour is its surprisal's, as charlm score --explain bins it
    text = "To be, or not to be"
    page.locator("#score-text").fill(text)
    page.locator("#score-button").click()
    page.wait_for_function("document.getElementById('bits-per-char').textContent !== ''")
    ck = load_checkpoint(BUNDLED, with_training_state=False)
    chars = explain(ck.build_predictor(), ck.vocab, text)
    limits = [(1, "low"), (3, "mid"), (6, "high"), (float("inf"), "top")]
    spans = page.locator("#score-chars span")
    assert [spans.nth(i).get_attribute("class") for i in range(len(text))] == \
        [next(name for lim, name in limits if c.bits <= lim) for c in chars]
    bpc = score_texts(ck.build_predictor(), ck.vocab, [text])[0].bits_per_char
    assert abs(float(page.locator("#bits-per-char").inner_text()) - bpc) < 1e-3
    # an unknown character is the API's message on the page
    page.locator("#score-text").fill("café")
    page.locator("#score-button").click()
    page.wait_for_function("document.getElementById('error').textContent !== ''")
    assert "U+00E9" in page.locator("#error").inner_text()
    assert errors == ["Failed to load resource: the server responded with a status of 400 (Bad Request)"]
    assert all(u.startswith(server.url) for u in requests)
    page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)
    page.close()


def test_a_stream_whose_values_overflow_ends_alone():
    """One stream's overflow (a relu RNN on some text) is that stream's error; the batch goes on."""
    from charlm.errors import NotFiniteError
    from charlm.serve.engine import Params, Stream, seeded

    ck = load_checkpoint(BUNDLED, with_training_state=False)
    model, z = ck.build_model(), int(ck.vocab.encode("z")[0])

    class Overflowing:  # the bundled network, whose values overflow wherever it reads a 'z'
        def __getattr__(self, name):
            return getattr(model, name)

        def forward(self, x, state):
            if (x == z).any():
                raise NotFiniteError("not finite")
            return model.forward(x, state)

    engine = Engine(Overflowing(), ck.vocab).start()
    good, bad = (Stream(ck.vocab.encode(p).astype(np.int64), Params(max_tokens=50, temperature=0), i, seeded(1, i))
                 for i, p in enumerate(["ROMEO:", "ROMEO: z"]))
    engine.submit([good, bad])
    for s in (good, bad):
        while not s.take()[1]:
            s.wait(1)
    engine.stop()
    assert bad.error == "not finite" and good.error is None and good.finish_reason == "length"
    want = generate(model, ck.vocab, "ROMEO:", 50, greedy=True)[0].text
    assert "".join(good.chars) == want
