"""The embedded server and the `openai` engine against it: same distributions as in-process, auth, errors, load."""

import asyncio
import json

import httpx
import numpy as np
import pytest

from lref.data import load_dir, render_product
from lref.engines.hf import HFEngine
from lref.engines.openai import OpenAIEngine
from lref.labels import ESCI
from lref.prompts import judgment_messages
from lref.serve.app import create_app
from lref.serve.embedded import BackgroundServer
from lref.serve.llm_host import ModelHost

KEY = "test-key"


@pytest.fixture(scope="module")
def adapter(tiny_model, tmp_path_factory):
    """A LoRA adapter on the tiny model whose weights are perturbed, so it scores differently from the base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.3)
    out = tmp_path_factory.mktemp("lora")
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def server(tiny_model, adapter):
    host = ModelHost(tiny_model, {"rel": adapter}, served_name="tiny", max_batch=16)
    with BackgroundServer(create_app(host, api_key=KEY)) as s:
        yield s


@pytest.fixture(scope="module")
def prompts(esci_slice):
    c = load_dir(esci_slice)
    return [judgment_messages(j.query, render_product(c.products[j.product_id], 60), ESCI) for j in c.judgments[:12]]


def _client(server, key=KEY):
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=30)


def test_health_and_models(server):
    with _client(server) as c:
        assert c.get("/health").json() == {"status": "ok"}
        ids = [m["id"] for m in c.get("/v1/models").json()["data"]]
    assert ids == ["tiny", "rel"]


@pytest.mark.parametrize("model", ["tiny", "rel"])
@pytest.mark.parametrize("local_tokenizer", [True, False])
def test_openai_engine_equals_hf(server, tiny_model, adapter, prompts, model, local_tokenizer):
    hf = HFEngine.from_pretrained(tiny_model, adapter=adapter if model == "rel" else None, batch_size=4)
    ref = hf.score(prompts)
    eng = OpenAIEngine(
        server.url + "/v1", model, api_key=KEY, tokenizer=hf.tokenizer if local_tokenizer else None, chunk_size=3
    )
    got = eng.score(prompts)
    assert eng.verbalizer_ids == hf.verbalizer_ids
    for r, g in zip(ref, got, strict=True):
        assert np.allclose(r.probs, g.probs, atol=1e-4, rtol=0)
        assert r.label == g.label and g.score == pytest.approx(r.score, abs=1e-4)


def test_adapter_changes_the_distribution(server, prompts):
    base = OpenAIEngine(server.url, "tiny", api_key=KEY).score(prompts[:4])
    rel = OpenAIEngine(server.url, "rel", api_key=KEY).score(prompts[:4])
    assert (
        max(abs(a - b) for x, y in zip(base, rel, strict=True) for a, b in zip(x.probs, y.probs, strict=True)) > 1e-3
    )


def test_greedy_generation_equals_hf(server, tiny_model, prompts):
    hf = HFEngine.from_pretrained(tiny_model, batch_size=4)
    want = hf.generate(prompts[:3], max_new_tokens=6)
    eng = OpenAIEngine(server.url, "tiny", api_key=KEY, tokenizer=hf.tokenizer)
    assert eng.generate(prompts[:3], max_new_tokens=6) == want
    # chat route, rendered by the server
    assert OpenAIEngine(server.url, "tiny", api_key=KEY).generate(prompts[:3], max_new_tokens=6) == want


def test_completion_response_shape(server, prompts):
    with _client(server) as c:
        r = c.post(
            "/v1/completions",
            json={
                "model": "tiny",
                "prompt": ["Query: a", "Query: b c"],
                "max_tokens": 2,
                "logprobs": 3,
                "return_tokens_as_token_ids": True,
            },
        )
    body = r.json()
    assert r.status_code == 200 and body["object"] == "text_completion" and len(body["choices"]) == 2
    ch = body["choices"][0]
    assert ch["finish_reason"] in ("length", "stop")
    lp = ch["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == len(lp["text_offset"])
    assert 3 <= len(lp["top_logprobs"][0]) <= 4 and all(v <= 0 for v in lp["top_logprobs"][0].values())
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]


def test_auth(server):
    body = {"model": "tiny", "prompt": "hello", "max_tokens": 1}
    for key in (None, "wrong"):
        with _client(server, key) as c:
            r = c.post("/v1/completions", json=body)
            assert r.status_code == 401 and r.json()["error"]["code"] == 401
            assert c.get("/v1/models").status_code == 401
            assert c.get("/health").status_code == 200
    with _client(server) as c:
        assert c.post("/v1/completions", json=body).status_code == 200
    with pytest.raises(Exception, match="401"):
        OpenAIEngine(server.url, "tiny", api_key="wrong", max_retries=0).score(["x"])


@pytest.mark.parametrize(
    "payload, status, param",
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        ({"model": "nope", "prompt": "a"}, 404, "model"),
        ({"model": "tiny"}, 400, "prompt"),
        ({"model": "tiny", "prompt": ""}, 400, None),
        ({"model": "tiny", "prompt": "a", "logprobs": 50}, 400, "logprobs"),
        ({"model": "tiny", "prompt": "a", "max_tokens": 0}, 400, "max_tokens"),
        ({"model": "tiny", "prompt": "a", "max_tokens": "many"}, 400, "max_tokens"),
        ({"model": "tiny", "prompt": "a", "temperature": -1}, 400, "temperature"),
        ({"model": "tiny", "prompt": "a", "n": 3}, 400, "n"),
        ({"model": "tiny", "prompt": "a", "allowed_token_ids": [10**7]}, 400, "allowed_token_ids"),
        ({"model": "tiny", "prompt": [10**7]}, 400, "prompt"),
        ({"model": "tiny", "prompt": "a", "logit_bias": {"x": 1}}, 400, None),
        ({"model": "tiny", "prompt": "word " * 5000, "max_tokens": 1}, 400, "max_tokens"),
    ],
)
def test_bad_completion_requests_get_4xx_json(server, payload, status, param):
    with _client(server) as c:
        if isinstance(payload, bytes):
            r = c.post("/v1/completions", content=payload, headers={"content-type": "application/json"})
        else:
            r = c.post("/v1/completions", json=payload)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == status and err["message"] and "Traceback" not in r.text
    if param:
        assert err["param"] == param


def test_bad_chat_requests_get_4xx_json(server):
    with _client(server) as c:
        cases = [
            ({"model": "tiny", "messages": []}, 400),
            ({"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}, 400),
            (
                {
                    "model": "tiny",
                    "messages": [{"role": "user", "content": "x"}],
                    "top_logprobs": 99,
                    "logprobs": True,
                },
                400,
            ),
            ({"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404),
        ]
        for body, status in cases:
            r = c.post("/v1/chat/completions", json=body)
            assert r.status_code == status and "error" in r.json(), (body, r.text)
        assert c.get("/v1/nothing-here").status_code == 404


def test_200_concurrent_requests_each_get_their_own_answer(server, tiny_model):
    hf = HFEngine.from_pretrained(tiny_model, batch_size=16)
    vid = hf.verbalizer_ids
    texts = [f"Query: item {i} " + "red " * (i % 23) + f"size {i}\nAnswer:" for i in range(200)]
    want = hf.verbalizer_logits(texts)
    n_tokens = [len(hf.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]

    async def go():
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, limits=limits, timeout=120
        ) as c:
            body = lambda t: {  # noqa: E731
                "model": "tiny",
                "prompt": t,
                "max_tokens": 1,
                "logprobs": 4,
                "logprob_token_ids": vid,
                "return_tokens_as_token_ids": True,
            }
            return await asyncio.gather(*(c.post("/v1/completions", json=body(t)) for t in texts))

    responses = asyncio.run(go())
    assert [r.status_code for r in responses] == [200] * 200
    for i, r in enumerate(responses):
        body = r.json()
        assert body["usage"]["prompt_tokens"] == n_tokens[i]
        top = body["choices"][0]["logprobs"]["top_logprobs"][0]
        lp = np.array([top[f"token_id:{t}"] for t in vid])
        ref = want[i] - np.logaddexp.reduce(want[i])  # log-softmax over the verbalizers
        assert np.allclose(lp - np.logaddexp.reduce(lp), ref, atol=1e-4)


def test_score_and_eval_commands_through_endpoint(server, esci_slice, tiny_model, adapter, tmp_path, monkeypatch):
    from lref.cli import main
    from lref.data import read_jsonl

    common = ["--data", str(esci_slice), "--queries", "2"]
    assert (
        main(
            [
                "score",
                *common,
                "--model",
                str(tiny_model),
                "--adapter",
                str(adapter),
                "--out",
                str(tmp_path / "a.jsonl"),
            ]
        )
        == 0
    )
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert (
        main(
            ["score", *common, "--endpoint", server.url + "/v1", "--model", "rel", "--out", str(tmp_path / "b.jsonl")]
        )
        == 0
    )
    a, b = read_jsonl(tmp_path / "a.jsonl"), read_jsonl(tmp_path / "b.jsonl")
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        assert (x["query_id"], x["product_id"]) == (y["query_id"], y["product_id"])
        for k in x["probs"]:
            assert abs(x["probs"][k] - y["probs"][k]) < 1e-4
    monkeypatch.delenv("OPENAI_API_KEY")
    out = tmp_path / "run"
    argv = ["eval", "--scorer", "llm", *common, "--endpoint", server.url, "--model", "rel", "--api-key", KEY]
    assert main([*argv, "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["n_pairs"] == len(a)
    assert main([*argv[:-2], "--out", str(tmp_path / "noauth")]) == 1  # no key: the server's 401 is reported
