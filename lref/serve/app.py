"""The server's FastAPI app: auth, errors, metrics, /health, /v1/models, and the OpenAI and relevance routes.

- The API key is checked on every scoring route (`/v1/*`, `/v2/*`, `/rerank`); /health, /metrics and
  the OpenAPI document stay open.
- Every error is a JSON body with a reason (`lref.serve.errors`); nothing returns a traceback.
- /metrics is Prometheus text: requests by route, model and status, latency histograms by route and
  model, and the queue depth. Each app has its own registry, so several apps can live in one process.
"""

from __future__ import annotations

import logging
import time

from lref.serve import schema as S
from lref.serve.batcher import Batcher
from lref.serve.config import Limits
from lref.serve.errors import RequestError, error_response, validation_message

log = logging.getLogger(__name__)

PROTECTED = ("/v1/", "/v2/", "/rerank")
ROUTES = {
    "/v1/completions",
    "/v1/chat/completions",
    "/v1/models",
    "/v1/rerank",
    "/rerank",
    "/v2/rerank",
    "/v1/score",
    "/v1/search",
    "/tokenize",
    "/detokenize",
    "/health",
    "/metrics",
}


def _metrics(batcher: Batcher):
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    reg = CollectorRegistry()
    requests = Counter("lref_requests", "HTTP requests", ["route", "model", "status"], registry=reg)
    latency = Histogram(
        "lref_request_seconds",
        "request latency",
        ["route", "model"],
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        registry=reg,
    )
    depth = Gauge("lref_queue_depth", "requests admitted and not yet answered", registry=reg)
    depth.set_function(lambda: batcher.pending)
    return reg, requests, latency


def create_app(
    host=None,
    api_key: str | None = None,
    max_batch: int = 32,
    scorers: dict | None = None,
    catalogue=None,
    limits: Limits | None = None,
):
    """The app over an LLM host (OpenAI routes; may be None) and `scorers` ({served name: scorer})."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import PlainTextResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from lref.serve.rerank_routes import relevance_router

    limits = limits or Limits()
    scorers = dict(scorers or {})
    if host is not None and not scorers:
        from lref.serve.scorers import JudgeScorer

        scorers = {n: JudgeScorer(n, host) for n in host.names}
    batcher = Batcher(host, max_batch=max_batch, max_queue=limits.max_queue)
    registry, requests, latency = _metrics(batcher)

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="lref server", lifespan=lifespan)
    app.state.host, app.state.scorers, app.state.batcher = host, scorers, batcher

    @app.middleware("http")
    async def auth_and_metrics(request: Request, call_next):
        path = request.url.path
        route = path if path in ROUTES else "other"
        t0 = time.perf_counter()
        if api_key and path.startswith(PROTECTED):
            if request.headers.get("authorization", "") != f"Bearer {api_key}":
                requests.labels(route, "", "401").inc()
                return error_response(401, "Unauthorized: missing or wrong API key", "AuthenticationError")
        try:
            response = await call_next(request)
        except Exception:
            requests.labels(route, getattr(request.state, "model", ""), "500").inc()
            raise
        model = getattr(request.state, "model", "")
        requests.labels(route, model, str(response.status_code)).inc()
        latency.labels(route, model).observe(time.perf_counter() - t0)
        return response

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request, exc: RequestValidationError):
        msg, param = validation_message(exc.errors())
        return error_response(400, msg, "BadRequestError", param)

    @app.exception_handler(RequestError)
    async def on_request_error(request, exc: RequestError):
        return error_response(exc.status, str(exc), exc.type, exc.param, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request, exc: StarletteHTTPException):
        return error_response(
            exc.status_code, str(exc.detail), "NotFoundError" if exc.status_code == 404 else "HTTPError"
        )

    @app.exception_handler(Exception)
    async def on_bug(request, exc: Exception):
        log.exception("internal error on %s", request.url.path)
        return error_response(500, f"internal error: {type(exc).__name__}", "InternalServerError")

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics():
        """Prometheus text format."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", responses={401: {"model": S.ErrorResponse}})
    async def models() -> S.ModelList:
        cards = []
        if host is not None:
            cards.append(S.ModelCard(id=host.base_name, root=host.base_name, max_model_len=host.max_model_len))
            cards += [S.ModelCard(id=n, root=str(p), parent=host.base_name) for n, p in host.loras.items()]
        llm = {c.id for c in cards}
        for c in cards:
            c.kind = "llm"
        cards += [S.ModelCard(id=n, root=s.root, kind=s.kind) for n, s in scorers.items() if n not in llm]
        return S.ModelList(data=cards)

    if host is not None:
        from lref.serve.openai_routes import openai_router

        app.include_router(openai_router(host, batcher))
    app.include_router(relevance_router(scorers, catalogue, batcher, limits))
    return app
