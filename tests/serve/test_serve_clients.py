"""Real clients against the running server: the Cohere SDK, LangChain's CohereRerank and the openai SDK."""

from __future__ import annotations

import numpy as np
import pytest

KEY = "serve-key"  # the key tests/serve/conftest.py starts the server with


@pytest.fixture(scope="module")
def query_products(corpus):
    """The first query of the slice and its judged esci150 products, in judgment order."""
    qid = corpus.judgments[0].query_id
    js = [j for j in corpus.judgments if j.query_id == qid]
    return qid, js[0].query, [corpus.products[j.product_id] for j in js]


def test_cohere_sdk_reranks_real_products(server, query_products, offline):
    import cohere

    from lref.distill.features import student_text

    qid, query, prods = query_products
    co = cohere.ClientV2(base_url=server.url, api_key=KEY)
    res = co.rerank(model="ranker", query=query, documents=[student_text(p) for p in prods], top_n=5)
    assert len(res.results) == 5
    want = sorted(((offline["ranker"][(qid, p.product_id)]["score"], -i) for i, p in enumerate(prods)), reverse=True)
    assert [r.index for r in res.results] == [-i for _, i in want[:5]]
    np.testing.assert_allclose([r.relevance_score for r in res.results], [s for s, _ in want[:5]], atol=1e-5)

    bad = cohere.ClientV2(base_url=server.url, api_key="wrong")
    with pytest.raises(cohere.core.api_error.ApiError) as e:
        bad.rerank(model="ranker", query=query, documents=["a"])
    assert e.value.status_code == 401
    with pytest.raises(cohere.core.api_error.ApiError) as e:
        co.rerank(model="no-such-model", query=query, documents=["a"])
    assert e.value.status_code == 404 and "no-such-model" in str(e.value.body)


def test_langchain_cohere_rerank_compresses_real_products(server, query_products, offline):
    import cohere
    from langchain_cohere import CohereRerank
    from langchain_core.documents import Document

    from lref.distill.features import student_text

    qid, query, prods = query_products
    docs = [Document(page_content=student_text(p), metadata={"product_id": p.product_id}) for p in prods]
    rr = CohereRerank(client=cohere.ClientV2(base_url=server.url, api_key=KEY), model="ranker", top_n=3)
    out = rr.compress_documents(docs, query)
    scores = {p.product_id: offline["ranker"][(qid, p.product_id)]["score"] for p in prods}
    best = sorted(scores, key=lambda p: -scores[p])[:3]
    assert [d.metadata["product_id"] for d in out] == best
    np.testing.assert_allclose([d.metadata["relevance_score"] for d in out], [scores[p] for p in best], atol=1e-5)


def test_openai_sdk_still_completes(server):
    import openai

    c = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY)
    r = c.completions.create(model="tiny", prompt="Query: red shoes\nAnswer:", max_tokens=2, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length") and r.usage.completion_tokens >= 1
    assert [m.id for m in c.models.list()] == ["tiny", "ranker", "ltr", "recall"]
