"""Running the server: `serve` (until interrupted, graceful shutdown) and `BackgroundServer` (tests, benchmarks).

The pieces, vLLM-style: request and response bodies in `schema` / `rerank_schema`, the LLM host in
`llm_host`, the students in `scorers`, the worker thread in `batcher`, the routes in `openai_routes`
/ `rerank_routes`, and the app that ties them together in `app`.
"""

from __future__ import annotations

import logging
import threading
import time

from lref.serve.app import create_app
from lref.serve.config import ServeConfig, build

log = logging.getLogger(__name__)


def app_for(cfg: ServeConfig):
    """Load what `cfg` names and build its app."""
    host, scorers, catalogue = build(cfg)
    return create_app(host, cfg.api_key, cfg.max_batch, scorers, catalogue, cfg.limits())


def serve(cfg: ServeConfig, app=None) -> None:
    """Serve until SIGINT/SIGTERM; uvicorn then stops accepting, and requests in flight finish first."""
    import uvicorn

    app = app or app_for(cfg)
    log.info("serving %s on http://%s:%d", list(app.state.scorers), cfg.host, cfg.port)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", timeout_graceful_shutdown=30)


class BackgroundServer:
    """Run an app with uvicorn in a daemon thread (tests, benchmarks, notebooks). Use as a context manager."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import socket

        import uvicorn

        if port == 0:
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.host, self.port = host, port
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
