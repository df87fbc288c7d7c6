"""``charlm serve``: models over HTTP, for programs and pages that are not charlm (extra
``charlm[serve]``: starlette and uvicorn).

engine.py steps every stream in flight together (continuous batching); api.py is the
OpenAI-compatible API and the playground page over it; ``run`` loads the models, starts one
engine each and serves until SIGTERM or Ctrl-C, which finish the requests in flight first.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path

from ..errors import CharlmError
from ..predict.checkpoint import BUNDLED_NAME, checkpoint_path


def _needs():
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError:
        raise CharlmError("charlm serve needs starlette and uvicorn: pip install 'charlm[serve]'") from None
    return uvicorn


def model_names(paths: list[str | None]) -> list[str]:
    """What a request's ``model`` calls each checkpoint: the run's name (its directory, or the
    file's stem), 'bundled' for the bundled model; run/file where two runs share a name."""
    def run_name(p):
        if p is None:
            return BUNDLED_NAME
        q = Path(p)
        return q.name if q.is_dir() else (q.parent.name or q.stem)

    names = [run_name(p) for p in paths]
    if len(set(names)) < len(names):
        names = [n if p is None else f"{run_name(p)}/{checkpoint_path(p).stem}"
                 for n, p in zip(names, paths)]
    if len(set(names)) < len(names):
        raise CharlmError(f"two --checkpoint values name the same model ({', '.join(names)}); give each once")
    return names


class _Server:
    """uvicorn's server that, after SIGTERM or Ctrl-C has let the requests in flight finish,
    returns instead of raising the signal again: the process exits 0."""

    def __new__(cls, config):
        uvicorn = _needs()

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):
                if threading.current_thread() is not threading.main_thread():
                    yield
                    return
                old = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
                try:
                    yield
                finally:
                    for s, h in old.items():
                        signal.signal(s, h)

        return Server(config)


def run(served, sock, limits, api_key: str | None, cors: list[str], on_ready=None) -> None:
    """Serve ``served`` (api.Served, engines not started) on the listening socket ``sock`` until
    SIGTERM or Ctrl-C."""
    uvicorn = _needs()
    import logging

    from .api import build_app

    log = logging.getLogger("uvicorn.error")
    host = sock.getsockname()[0]
    app = build_app(served, limits, api_key, cors, loopback=is_loopback(host), host=host,
                    log_exception=lambda e: log.exception("while answering a request", exc_info=e))

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        for m in served:
            m.engine.start()
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            for m in served:
                m.engine.stop()

    app.router.lifespan_context = lifespan
    config = uvicorn.Config(app, log_level="info", timeout_graceful_shutdown=None, server_header=False, lifespan="on")
    _Server(config).run(sockets=[sock])


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
