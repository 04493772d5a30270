"""schemathesis against the server's own /openapi.json: every route, a bounded number of generated cases each,
no 5xx and no response that breaks the schema the server publishes."""

from __future__ import annotations

import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

KEY = "serve-key"  # the key tests/serve/conftest.py starts the server with


def _short(case) -> None:
    """Cap generated completions at a few tokens: the tiny judge generates on CPU."""
    body = case.body if isinstance(case.body, dict) else {}
    for key in ("max_tokens", "max_completion_tokens"):
        if isinstance(body.get(key), int) and not isinstance(body.get(key), bool):
            body[key] = max(1, min(body[key], 4))


def test_every_route_answers_within_its_schema(server):
    """Each operation gets at most 12 generated cases (seeded); any 5xx or schema-breaking answer fails."""
    from hypothesis import HealthCheck, given, seed, settings

    api = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    ops = [r.ok() for r in api.get_all_operations()]
    assert len(ops) >= 12
    checks = [not_a_server_error, response_schema_conformance, content_type_conformance]
    for op in ops:

        @seed(0)
        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=op.as_strategy())
        def run(case):
            _short(case)
            case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, checks=checks, timeout=60)

        run()


def test_openapi_lists_every_route(server):
    import httpx

    paths = set(httpx.get(f"{server.url}/openapi.json").json()["paths"])
    assert {"/v1/rerank", "/rerank", "/v2/rerank", "/v1/score", "/v1/search", "/v1/models", "/v1/completions",
            "/v1/chat/completions", "/health", "/metrics", "/tokenize", "/detokenize"} <= paths  # fmt: skip
