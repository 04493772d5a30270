"""The one OpenAI client of lref: the `openai` SDK over an httpx connection pool, with lref's retry policy.

Every call to an OpenAI-compatible server (the `openai` engine, the Multi-CoT teacher) goes through
`OpenAIClient.call`, which wraps one SDK request:
- the SDK builds the request, sends vLLM's extension fields through `extra_body`, applies the timeout
  and turns HTTP errors into typed exceptions; its own retries are off (`max_retries=0`);
- `call` retries 408/409/429/5xx answers, connection errors and timeouts with exponential backoff and
  jitter (`backoff * 2**attempt`, at most 30 s, a `Retry-After` header honoured), and raises
  `EndpointError` with the route, the status and the server's message, or the transport error and the
  number of attempts.
Routes outside the OpenAI API (vLLM's /tokenize and /detokenize, at the server root) go through
`post`, with the same policy.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
MAX_DELAY = 30.0


class EndpointError(RuntimeError):
    """The server refused a request or answered something lref cannot use."""


def server_root(base_url: str) -> str:
    """The server's root URL: `base_url` without a trailing slash or `/v1`."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


class OpenAIClient:
    """An `openai.OpenAI` for `base_url` (with or without `/v1`), and retried calls through it.

    `api_key` defaults to $OPENAI_API_KEY (and to "EMPTY", vLLM's convention, when that is unset);
    `transport` replaces the network (an `httpx.MockTransport` in tests).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_connections: int = 16,
        transport=None,
    ):
        import httpx
        import openai

        self.root = server_root(base_url)
        self.max_retries, self.backoff = max_retries, backoff
        http = httpx.Client(timeout=timeout, transport=transport, limits=httpx.Limits(max_connections=max_connections))
        self.sdk = openai.OpenAI(
            base_url=self.root + "/v1",
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
            timeout=timeout,
            max_retries=0,
            http_client=http,
        )

    def call(self, route: str, request: Callable[[object], T]) -> T:
        """`request(sdk)` with retries; `route` names the request in errors and logs."""
        import openai

        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                return request(self.sdk)
            except openai.APIConnectionError as e:  # timeouts included
                cause = e.__cause__ or e
                if last:
                    raise EndpointError(
                        f"{route}: {type(cause).__name__}: {cause} after {attempt + 1} attempts"
                    ) from e
                self.sleep(attempt, None)
            except openai.APIStatusError as e:
                if e.status_code in RETRY_STATUS and not last:
                    log.warning("%s answered %d; retrying", route, e.status_code)
                    self.sleep(attempt, e.response.headers.get("retry-after"))
                    continue
                raise EndpointError(f"{route}: HTTP {e.status_code}: {error_message(e.response)}") from e
        raise AssertionError("unreachable")

    def post(self, path: str, body: dict) -> dict:
        """POST JSON to a route at the server root (e.g. vLLM's /tokenize), retried like `call`."""
        url = self.root + path
        return self.call(path, lambda sdk: sdk.post(url, body=body, cast_to=object))

    def sleep(self, attempt: int, retry_after: str | None) -> None:
        """Wait before retry `attempt + 1`: exponential backoff with jitter, at least `Retry-After` seconds."""
        delay = self.backoff * 2**attempt * (0.5 + random.random())
        if retry_after:
            try:
                delay = max(delay, float(retry_after))
            except ValueError:
                pass
        time.sleep(min(delay, MAX_DELAY))

    def close(self) -> None:
        self.sdk.close()


def error_message(response) -> str:
    """The server's error message from an error response (OpenAI's `{"error": {"message": ...}}` or text)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    err = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(err, dict):
        return str(err.get("message", err))
    return str(err)[:300]
