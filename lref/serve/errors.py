"""Client errors of the server and their JSON bodies (OpenAI-style `{"error": {...}}`), never a traceback."""

from __future__ import annotations

from lref.serve import schema as S


class RequestError(Exception):
    """A client error: becomes an HTTP status and an OpenAI-style JSON error body."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        type_: str = "BadRequestError",
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.type, self.param, self.headers = status, type_, param, headers


class Overloaded(RequestError):
    """The bounded request queue is full: 503 with `Retry-After`, so latency never grows without bound."""

    def __init__(self, depth: int, retry_after: int = 1):
        super().__init__(
            f"server busy: {depth} requests queued (the most it holds); retry after {retry_after} s",
            503,
            "ServiceUnavailableError",
            headers={"Retry-After": str(retry_after)},
        )


def error_response(status: int, message: str, type_: str, param: str | None = None, headers=None):
    from fastapi.responses import JSONResponse

    body = S.ErrorResponse(error=S.ErrorInfo(message=message, type=type_, param=param, code=status))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def validation_message(errors) -> tuple[str, str | None]:
    """One readable line from pydantic's errors (at most five), and the first field named."""
    parts, param = [], None
    for e in errors[:5]:
        loc = [str(x) for x in e.get("loc", ()) if x != "body"]
        if loc and param is None:
            param = loc[0]
        msg = e.get("msg", "invalid")
        parts.append(f"{'.'.join(loc) or 'body'}: {msg}")
    return "; ".join(parts), param
