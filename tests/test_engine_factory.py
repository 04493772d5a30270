"""The one engine factory and the one OpenAI client: which engine a flag set makes, and the teacher's requests."""

import json

import httpx
import pytest

from lref.config import ConfigError
from lref.engines.client import OpenAIClient
from lref.engines.factory import EngineArgs, make_engine
from lref.engines.hf import HFEngine
from lref.engines.openai import OpenAIEngine
from lref.labels import ESCI
from lref.train.mcot import OpenAITeacher


def test_a_model_makes_the_local_engine(tiny_model):
    eng = make_engine(str(tiny_model), None, scheme="binary", batch_size=3)
    assert isinstance(eng, HFEngine) and eng.batch_size == 3 and eng.scheme.name == "binary"
    same = EngineArgs(model=str(tiny_model), batch_size=3).engine("binary")
    assert isinstance(same, HFEngine) and same.verbalizer_ids == eng.verbalizer_ids


def test_an_endpoint_makes_the_openai_engine_with_the_env_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    eng = make_engine("base", "http://vllm.test:8000/v1/", served_model="judge")
    assert isinstance(eng, OpenAIEngine) and eng.model == "judge"
    assert str(eng.client.sdk.base_url) == "http://vllm.test:8000/v1/" and eng.client.sdk.api_key == "sk-env"
    given = EngineArgs(model="judge", endpoint="http://vllm.test", api_key="sk-flag").engine()
    assert given.model == "judge" and given.client.sdk.api_key == "sk-flag"


def test_no_model_and_no_endpoint_is_a_config_error():
    with pytest.raises(ConfigError, match="--model.*--endpoint"):
        make_engine(None, None)


def _teacher(handler):
    client = OpenAIClient("http://teacher.test/v1", "sk-t", backoff=0, transport=httpx.MockTransport(handler))
    return OpenAITeacher("http://teacher.test/v1", "writer", max_tokens=40, client=client)


def _chat(text):
    msg = {"role": "assistant", "content": text}
    return {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": "writer",
        "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}],
    }


def test_openai_teacher_requests_and_retries():
    seen = []

    def handler(request):
        body = json.loads(request.content)
        seen.append(body)
        if len(seen) == 1:
            return httpx.Response(503, json={"error": {"message": "busy"}})
        assert request.url.path == "/v1/chat/completions" and request.headers["authorization"] == "Bearer sk-t"
        return httpx.Response(200, json=_chat(f"rationale {len(seen)}\nAnswer:\nE"))

    items = [{"query": "q", "product_text": "t", "label": "E"}, {"query": "r", "product_text": "u", "label": "I"}]
    out = _teacher(handler).rationales("ee", items, ESCI)
    assert out == ["rationale 2\nAnswer:\nE", "rationale 3\nAnswer:\nE"]  # the 503 was retried
    assert seen[1]["model"] == "writer" and seen[1]["max_tokens"] == 40 and seen[1]["temperature"] == 0.0
    assert seen[1]["messages"][-1]["role"] == "user" and "q" in seen[1]["messages"][-1]["content"]


def test_openai_teacher_drops_one_rationale_when_a_request_fails(caplog):
    calls = []

    def handler(request):
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(400, json={"error": {"message": "prompt too long"}})
        return httpx.Response(200, json=_chat("fine\nAnswer:\nS"))

    items = [{"query": "q", "product_text": "t", "label": "S"}] * 2
    assert _teacher(handler).rationales("ee", items, ESCI) == ["", "fine\nAnswer:\nS"]
    assert len(calls) == 2 and "HTTP 400: prompt too long" in caplog.text  # a 400 is not retried
