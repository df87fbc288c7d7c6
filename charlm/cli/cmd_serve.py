"""``charlm serve``: models over an OpenAI-compatible HTTP API, with a playground page."""

from __future__ import annotations

import os
import socket

import click

from ..errors import CharlmError
from .base import CHECKPOINT_HELP, main, network_only_option, open_model, option, predictor


@main.command()
@option("--checkpoint", "-c", "checkpoints", multiple=True, type=click.Path(path_type=str),
        show_default="the bundled model",
        help=CHECKPOINT_HELP + " Repeat to serve several; a request's model (the run's name) chooses.")
@option("--host", default="127.0.0.1",
        help="Address to listen on. Anything but this machine (127.0.0.1, ::1, localhost) needs an API key.")
@option("--port", default=8000, type=click.IntRange(0, 65535), help="Port to listen on (0: any free one).")
@option("--api-key", default=None, show_default="$CHARLM_API_KEY",
        help="Requests must carry 'Authorization: Bearer KEY'. Prefer CHARLM_API_KEY in the environment: a "
             "command line shows in ps.")
@option("--cors", multiple=True, metavar="ORIGIN",
        help="Let pages from ORIGIN (e.g. http://localhost:3000) call the API (repeatable); none by default.")
@network_only_option
def serve(checkpoints, host, port, api_key, cors, network_only):
    """Serve models over HTTP: an OpenAI-compatible completions API (one token is one
    character) at /v1, vLLM's /tokenize, /detokenize and /tokenizer_info, /health, and a
    playground page at /.

    Every client's streams step through the model together (continuous batching). SIGTERM or
    Ctrl-C finishes the requests in flight, then exits 0.
    """
    from .. import serve as server
    from ..serve.api import Limits, Served
    from ..serve.engine import Engine

    server._needs()
    api_key = api_key if api_key is not None else os.environ.get("CHARLM_API_KEY") or None
    if api_key is not None and not api_key.strip():  # "Bearer " with nothing after it would match
        raise CharlmError("the API key (--api-key or CHARLM_API_KEY) is empty: a key needs characters other than spaces")
    if api_key is not None and not (api_key.isascii() and api_key.isprintable() and api_key == api_key.strip()):
        # A header is read as Latin-1 and loses its outer spaces: no client could send such a key.
        raise CharlmError("the API key (--api-key or CHARLM_API_KEY) must be printable ASCII without spaces around it")
    if not server.is_loopback(host) and api_key is None:
        raise CharlmError(f"--host {host} answers every machine that can reach this one: protect it with an API key "
                          "(CHARLM_API_KEY in the environment, or --api-key)")
    limits = Limits()
    paths = list(checkpoints) or [None]
    served = []
    for name, path in zip(server.model_names(paths), paths):
        ck = open_model(path)
        served.append(Served(name, ck, Engine(predictor(ck, network_only), ck.vocab, limits.max_batch,
                                              limits.max_waiting)))
    sock = _listen(host, port)
    where = f"http://{'[' + host + ']' if ':' in host else host}:{sock.getsockname()[1]}"

    def ready():
        names = ", ".join(m.name for m in served)
        click.echo(f"serving {names} at {where}: the OpenAI API at {where}/v1, the playground at {where}/"
                   + ("; requests need the API key" if api_key else ""), err=True)

    server.run(served, sock, limits, api_key, list(cors), on_ready=ready)


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a port in use is one line (and port 0 a known one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
        sock = socket.socket(infos[0][0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(infos[0][4])
        sock.listen(2048)
    except OSError as e:
        raise CharlmError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock
