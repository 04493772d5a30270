"""The relevance routes against a running server: shapes, offline-equal scores, search, auth, limits, load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SERVED = ["tiny", "ranker", "ltr", "recall"]


def conforms(ours, ref, path="$"):
    """Every key of the reference body is in ours, with a value of the same JSON type (recursively)."""
    if isinstance(ref, dict):
        assert isinstance(ours, dict), f"{path}: expected an object, got {ours!r}"
        for k, v in ref.items():
            assert k in ours, f"{path}: missing {k!r}"
            conforms(ours[k], v, f"{path}.{k}")
    elif isinstance(ref, list):
        assert isinstance(ours, list), f"{path}: expected a list"
        for i, x in enumerate(ours):
            conforms(x, ref[0], f"{path}[{i}]") if ref else None
    elif isinstance(ref, bool):
        assert isinstance(ours, bool), f"{path}: expected a bool"
    elif isinstance(ref, int | float):
        assert isinstance(ours, int | float) and not isinstance(ours, bool), f"{path}: expected a number"
    elif isinstance(ref, str):
        assert isinstance(ours, str), f"{path}: expected a string"


def by_query(corpus):
    out: dict[str, list] = {}
    for j in corpus.judgments:
        out.setdefault(j.query_id, []).append(j)
    return out


def test_models_lists_every_scorer(client, students):
    data = client.get("/v1/models").json()["data"]
    assert [m["id"] for m in data] == SERVED
    assert [m["kind"] for m in data] == ["llm", "ranker", "ltr", "recall"]
    assert data[1]["root"] == students["ranker"]


@pytest.mark.parametrize("model", SERVED)
def test_rerank_scores_equal_lref_eval(client, corpus, offline, model):
    """Each query's judged products, by id and in judgment order: the scores scores.jsonl holds (1e-5)."""
    for qid, js in by_query(corpus).items():
        body = {"model": model, "query": js[0].query, "documents": [{"product_id": j.product_id} for j in js]}
        r = client.post("/v1/rerank", json=body)
        assert r.status_code == 200, r.text
        res = r.json()["results"]
        assert sorted(x["index"] for x in res) == list(range(len(js)))
        got = {x["index"]: x["relevance_score"] for x in res}
        want = [offline[model][(qid, j.product_id)]["score"] for j in js]
        np.testing.assert_allclose([got[i] for i in range(len(js))], want, rtol=0, atol=1e-5)
        if model == "tiny":  # the judge adds the grade distribution, as eval's probs
            for x in res:
                probs = offline[model][(qid, js[x["index"]].product_id)]["probs"]
                assert set(x["grades"]) == set(probs)
                assert all(abs(x["grades"][k] - probs[k]) < 1e-5 for k in probs)
                assert 0.0 <= x["relevance_score"] <= 1.0


@pytest.mark.parametrize("model", ["ranker", "recall"])
def test_text_documents_score_as_the_products_they_render(client, corpus, offline, model):
    from lref.distill.features import student_text

    qid, js = next(iter(by_query(corpus).items()))
    texts = [student_text(corpus.products[j.product_id]) for j in js]
    r = client.post("/v2/rerank", json={"model": model, "query": js[0].query, "documents": texts})
    got = {x["index"]: x["relevance_score"] for x in r.json()["results"]}
    want = [offline[model][(qid, j.product_id)]["score"] for j in js]
    np.testing.assert_allclose([got[i] for i in range(len(js))], want, rtol=0, atol=1e-5)


def test_rerank_shape_matches_cohere_and_vllm(client, corpus):
    js = corpus.judgments[:6]
    docs = [corpus.products[j.product_id].title for j in js]
    for path in ("/v1/rerank", "/rerank", "/v2/rerank"):
        body = client.post(path, json={"model": "ranker", "query": js[0].query, "documents": docs}).json()
        conforms(body, json.loads((FIXTURES / "cohere_rerank_v2_response.json").read_text()))
        scores = [x["relevance_score"] for x in body["results"]]
        assert scores == sorted(scores, reverse=True) and body["model"] == "ranker"
    body = client.post(
        "/v1/rerank", json={"model": "ranker", "query": js[0].query, "documents": docs, "return_documents": True}
    ).json()
    conforms(body, json.loads((FIXTURES / "vllm_rerank_response.json").read_text()))
    assert [x["document"]["text"] for x in body["results"]] == [docs[x["index"]] for x in body["results"]]


def test_top_n_and_ties_keep_input_order(client, corpus):
    j = corpus.judgments[0]
    text = corpus.products[j.product_id].title
    docs = [{"text": "unrelated words"}, {"text": text}, text, {"product_id": j.product_id}]
    res = client.post("/v1/rerank", json={"model": "ranker", "query": j.query, "documents": docs}).json()["results"]
    by_index = {x["index"]: x["relevance_score"] for x in res}
    assert by_index[1] == by_index[2]  # the same text twice: a tie
    order = [x["index"] for x in res]
    assert order.index(1) == order.index(2) - 1  # ... kept in input order
    top = client.post("/v1/rerank", json={"model": "ranker", "query": j.query, "documents": docs, "top_n": 2}).json()
    assert [x["index"] for x in top["results"]] == order[:2]


def test_score_route_in_vllm_shape(client, corpus):
    js = corpus.judgments[:5]
    texts = [corpus.products[j.product_id].title for j in js]
    body = client.post("/v1/score", json={"model": "ranker", "text_1": js[0].query, "text_2": texts}).json()
    conforms(body, json.loads((FIXTURES / "vllm_score_response.json").read_text()))
    assert [d["index"] for d in body["data"]] == list(range(5))
    rr = client.post("/v1/rerank", json={"model": "ranker", "query": js[0].query, "documents": texts}).json()
    want = {x["index"]: x["relevance_score"] for x in rr["results"]}
    np.testing.assert_allclose([d["score"] for d in body["data"]], [want[i] for i in range(5)], atol=1e-6)
    pairwise = client.post(
        "/v1/score", json={"model": "recall", "text_1": [js[0].query, js[0].query], "text_2": texts[:2]}
    ).json()
    assert len(pairwise["data"]) == 2
    bad = client.post("/v1/score", json={"model": "ranker", "text_1": ["a", "b"], "text_2": ["x", "y", "z"]})
    assert bad.status_code == 400 and "equal lengths" in bad.json()["error"]["message"]


def test_search_top_k_equals_offline_recall_and_the_cascade_reranks(client, corpus, students, offline):
    from lref.data import Corpus, Judgment
    from lref.distill.ltr import LTRModel
    from lref.distill.recall import BiEncoderStudent, open_index, search_index

    q = corpus.judgments[0].query
    student = BiEncoderStudent(students["recall"])
    idx = open_index(student, Path(students["recall"]) / "index")
    want = search_index(idx, student.embed_texts([q]), 10)[0]
    body = client.post("/v1/search", json={"query": q, "top_k": 10}).json()
    assert [h["product_id"] for h in body["results"]] == want
    assert body["model"] == "recall" and body["timings"]["recall_ms"] > 0

    cas = client.post("/v1/search", json={"query": q, "top_k": 5, "candidates": 20, "rerank_model": "ltr"}).json()
    cands = search_index(idx, student.embed_texts([q]), 20)[0]
    js = [Judgment("q", q, p, "I", 0) for p in cands]
    ltr = LTRModel.load(students["ltr"], int8=True).score_corpus(Corpus(js, corpus.products, corpus.scheme))
    order = sorted(range(20), key=lambda i: -ltr[i])[:5]
    assert [h["product_id"] for h in cas["results"]] == [cands[i] for i in order]
    np.testing.assert_allclose([h["score"] for h in cas["results"]], [ltr[i] for i in order], atol=1e-5)
    t = cas["timings"]
    assert t["recall_ms"] > 0 and t["rerank_ms"] > 0 and t["total_ms"] >= t["recall_ms"] + t["rerank_ms"]
    assert cas["rerank_model"] == "ltr" and all(h["recall_score"] is not None for h in cas["results"])

    given = [corpus.judgments[i].product_id for i in range(4)]
    r = client.post("/v1/search", json={"query": q, "top_k": 4, "candidates": given, "rerank_model": "ranker"})
    assert sorted(h["product_id"] for h in r.json()["results"]) == sorted(given)


@pytest.mark.parametrize(
    ("method", "path"),
    [("post", "/v1/rerank"), ("post", "/rerank"), ("post", "/v2/rerank"), ("post", "/v1/score"),
     ("post", "/v1/search"), ("get", "/v1/models"), ("post", "/v1/completions")],
)  # fmt: skip
def test_401_without_the_key(server, method, path):
    import httpx

    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = getattr(httpx, method)(server.url + path, headers=headers, **({"json": {}} if method == "post" else {}))
        assert r.status_code == 401 and "API key" in r.json()["error"]["message"]
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ({"model": "nope", "query": "q", "documents": ["a"]}, 404, "`nope` does not exist"),
        ({"model": "ranker", "query": "q", "documents": [{"product_id": "NOPE1"}]}, 404, "'NOPE1'"),
        ({"model": "ranker", "query": "q", "documents": ["a"] * 121}, 400, "limit is 120"),
        ({"model": "ranker", "query": "q", "documents": ["x" * 2001]}, 400, "limit is 2000"),
        ({"model": "ranker", "query": "q" * 2001, "documents": ["a"]}, 400, "limit is 2000"),
        ({"model": "ranker", "query": "q", "documents": ["a"], "top_n": 0}, 400, "top_n"),
        ({"model": "ranker", "query": "q", "documents": ["a"], "top_n": 500}, 400, "top_n=500"),
        ({"model": "ranker", "query": "q", "documents": []}, 400, "documents"),
        ({"model": "ranker", "query": "q", "documents": [{"url": "x"}]}, 400, "documents"),
        ({"model": "ltr", "query": "q", "documents": ["a"]}, 400, "catalogue products only"),
        ({"model": "ranker", "documents": ["a"]}, 400, "query"),
    ],
)
def test_bad_requests_get_4xx_with_a_reason(client, body, status, reason):
    r = client.post("/v1/rerank", json=body)
    assert r.status_code == status, r.text
    assert reason in r.json()["error"]["message"]


def test_search_errors(client):
    r = client.post("/v1/search", json={"query": "q", "model": "ranker"})
    assert r.status_code == 400 and "is a ranker model" in r.json()["error"]["message"]
    r = client.post("/v1/search", json={"query": "q", "candidates": ["x"]})
    assert r.status_code == 400 and "rerank_model" in r.json()["error"]["message"]
    r = client.post("/v1/search", json={"query": "q", "rerank_model": "missing"})
    assert r.status_code == 404 and "`missing`" in r.json()["error"]["message"]


def test_metrics_count_requests_per_route_and_model(client, server):
    import httpx

    client.post("/v1/rerank", json={"model": "ranker", "query": "q", "documents": ["a", "b"]})
    text = httpx.get(server.url + "/metrics").text
    assert 'lref_requests_total{model="ranker",route="/v1/rerank",status="200"}' in text
    assert 'lref_request_seconds_bucket{le="0.005",model="ranker",route="/v1/rerank"}' in text
    assert "lref_queue_depth 0.0" in text


class SlowRanker:
    """The tiny ranker behind a delay, so requests overlap (queue and shutdown tests)."""

    kind, name, root = "ranker", "slow", "slow"

    def __init__(self, inner, delay=0.6):
        self.inner, self.delay = inner, delay

    def score(self, query, docs):
        import time

        time.sleep(self.delay)
        return self.inner.score(query, docs)


@pytest.fixture(scope="module")
def slow_app(server):
    from lref.serve.app import create_app
    from lref.serve.config import Limits

    inner = server.server.config.app.state.scorers["ranker"]
    return lambda: create_app(scorers={"slow": SlowRanker(inner)}, limits=Limits(max_queue=2))


def test_full_queue_answers_503_with_retry_after(slow_app):
    import asyncio

    import httpx

    from lref.serve.embedded import BackgroundServer

    async def go(url):
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            body = {"query": "q", "documents": ["a", "b"]}
            return await asyncio.gather(*(c.post("/v1/rerank", json=body) for _ in range(6)))

    with BackgroundServer(slow_app()) as s:
        rs = asyncio.run(go(s.url))
    codes = sorted(r.status_code for r in rs)
    assert codes == [200, 200, 503, 503, 503, 503]
    busy = next(r for r in rs if r.status_code == 503)
    assert busy.headers["retry-after"] == "1" and "busy" in busy.json()["error"]["message"]


def test_shutdown_finishes_requests_in_flight(slow_app):
    import threading
    import time

    import httpx

    from lref.serve.embedded import BackgroundServer

    out = {}
    s = BackgroundServer(slow_app()).__enter__()

    def call():
        out["r"] = httpx.post(s.url + "/v1/rerank", json={"query": "q", "documents": ["a"]}, timeout=30)

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.3)  # the request is being scored
    s.__exit__(None, None, None)
    t.join(10)
    assert out["r"].status_code == 200 and len(out["r"].json()["results"]) == 1
    assert not s.thread.is_alive()
