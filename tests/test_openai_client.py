"""The `openai` engine against recorded vLLM response bodies (tests/fixtures), retries and errors, no server."""

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from lref.engines.openai import EndpointError, OpenAIEngine

FIX = Path(__file__).parent / "fixtures"
VERB = {"E": 36, "S": 50, "C": 34, "I": 40}


class QwenLikeTokenizer:
    """Just enough of a tokenizer: the verbalizers' ids, and plain text prompts."""

    chat_template = None
    all_special_tokens: list[str] = []

    def encode(self, text, add_special_tokens=False):
        return [VERB[text]] if text in VERB else [ord(c) for c in text]


def _fixture(name):
    return json.loads((FIX / name).read_text())


def _engine(handler, **kw):
    kw.setdefault("tokenizer", QwenLikeTokenizer())
    return OpenAIEngine("http://vllm.test/v1", "relevance", transport=httpx.MockTransport(handler), backoff=0, **kw)


def _softmax(x):
    x = np.exp(np.asarray(x) - max(x))
    return x / x.sum()


def test_completions_fixture_gives_hand_computed_distributions():
    seen = []

    def handler(request):
        body = json.loads(request.content)
        seen.append((request.url.path, body))
        return httpx.Response(200, json=_fixture("vllm_completions_logprobs.json"))

    eng = _engine(handler, api_key="sk-test")
    out = eng.score(["Query: towels\n\nProduct:\nA", "Query: towels\n\nProduct:\nB"])
    ((path, body),) = seen  # one request for the two pairs of one query
    assert path == "/v1/completions" and body["prompt"] == [
        "Query: towels\n\nProduct:\nA",
        "Query: towels\n\nProduct:\nB",
    ]
    assert body["max_tokens"] == 1 and body["logprobs"] == 4 and body["temperature"] == 1.0
    assert body["logprob_token_ids"] == body["allowed_token_ids"] == [36, 50, 34, 40]
    assert body["return_tokens_as_token_ids"] is True and body["add_special_tokens"] is False
    # exp(logprobs) in the fixture: E .7 S .2 C .05 I .1 -> renormalised over 1.05
    assert np.allclose(out[0].probs, np.array([0.7, 0.2, 0.05, 0.1]) / 1.05, atol=1e-7)
    assert out[0].label == "E" and out[1].label == "I"
    assert np.allclose(out[1].probs, _softmax([-4.60517019, -3.91202301, -2.99573227, -0.10536052]))
    # expected grade of the first: (3*.7 + 2*.2 + 1*.05) / 1.05 / 3
    assert out[0].score == pytest.approx((2.1 + 0.4 + 0.05) / 1.05 / 3)


def test_chat_fixture_and_the_auth_header():
    def handler(request):
        assert request.url.path == "/v1/chat/completions"
        assert request.headers["authorization"] == "Bearer sk-test"
        body = json.loads(request.content)
        assert body["max_completion_tokens"] == 1 and body["logprobs"] is True and body["top_logprobs"] == 4
        return httpx.Response(200, json=_fixture("vllm_chat_logprobs.json"))

    # no local chat template: chat prompts go to the server, which renders them
    eng = _engine(handler, api_key="sk-test")
    eng.local_tokenizer = False
    (r,) = eng.score([[{"role": "system", "content": "judge"}, {"role": "user", "content": "Query: q"}]])
    assert np.allclose(r.probs, np.array([0.25, 0.5, 0.125, 0.125]))  # E S C I
    assert r.label == "S"


def test_missing_verbalizers_raise_a_clear_error():
    eng = _engine(lambda req: httpx.Response(200, json=_fixture("vllm_completions_raw_mode.json")))
    with pytest.raises(EndpointError, match=r"verbalizer 'S'.*processed_logprobs"):
        eng.score(["Query: q\n\nProduct:\nx"])


def test_retries_on_503_and_429_then_succeeds():
    calls = []

    def handler(request):
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(503, json={"error": {"message": "busy", "type": "x", "code": 503}})
        if len(calls) == 2:
            return httpx.Response(429, headers={"retry-after": "0"}, json={"error": {"message": "slow", "code": 429}})
        return httpx.Response(200, json=_fixture("vllm_completions_logprobs.json"))

    out = _engine(handler).score(["Query: a\n\nProduct:\n1", "Query: a\n\nProduct:\n2"])
    assert len(calls) == 3 and out[0].label == "E"


def test_client_errors_are_not_retried_and_keep_the_server_message():
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(400, json=_fixture("vllm_error_400.json"))

    with pytest.raises(EndpointError, match="HTTP 400: Requested sample logprobs of 50"):
        _engine(handler).score(["x"])
    assert len(calls) == 1


def test_timeouts_retry_then_fail():
    calls = []

    def handler(request):
        calls.append(1)
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(EndpointError, match="ReadTimeout.*3 attempts"):
        _engine(handler, max_retries=2).score(["x"])
    assert len(calls) == 3


def test_prompts_are_grouped_by_query_in_chunks():
    bodies = []

    def handler(request):
        body = json.loads(request.content)
        bodies.append(body["prompt"])
        one = _fixture("vllm_completions_logprobs.json")
        choice = one["choices"][0]
        one["choices"] = [{**choice, "index": i} for i in range(len(body["prompt"]))]
        return httpx.Response(200, json=one)

    prompts = [f"Query: {q}\n\nProduct:\n{i}" for i, q in enumerate("abababa")]
    _engine(handler, chunk_size=3, concurrency=1).score(prompts)
    assert sorted(len(b) for b in bodies) == [1, 3, 3]
    for b in bodies:
        assert len({p.split("\n")[0] for p in b}) == 1  # each request holds one query
