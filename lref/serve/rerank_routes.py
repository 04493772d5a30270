"""The relevance routes: /v1/rerank (+ /rerank, /v2/rerank), /v1/score and /v1/search (the cascade).

Scoring runs on the batcher's worker thread, one request's candidates at a time, so a query's
candidates are scored exactly as `lref eval` scores them offline. Results are sorted by score,
descending; ties keep the input order.
"""

from __future__ import annotations

import time

from fastapi import Request

from lref.serve import rerank_schema as R
from lref.serve.errors import RequestError
from lref.serve.schema import ErrorResponse
from lref.serve.scorers import Doc

ERRORS = {c: {"model": ErrorResponse} for c in (400, 401, 404, 503)}
RERANKERS = ("ranker", "ltr", "recall", "llm")


def relevance_router(scorers: dict, catalogue, batcher, limits):
    """An APIRouter over `scorers` ({served name: scorer}), `catalogue` (or None) and `limits`."""
    from fastapi import APIRouter

    router = APIRouter()

    def pick(model: str | None, kinds: tuple[str, ...], route: str):
        if model is None:
            for s in scorers.values():
                if s.kind in kinds:
                    return s
            raise RequestError(f"{route}: no {' / '.join(kinds)} model is served", 404, "NotFoundError", "model")
        s = scorers.get(model)
        if s is None:
            raise RequestError(f"The model `{model}` does not exist.", 404, "NotFoundError", "model")
        if s.kind not in kinds:
            raise RequestError(
                f"{route}: model `{model}` is a {s.kind} model; use a {' or '.join(kinds)} model", 400, param="model"
            )
        return s

    def check_text(text: str, param: str) -> None:
        if len(text) > limits.max_text_chars:
            raise RequestError(
                f"{param} has {len(text)} characters; the limit is {limits.max_text_chars}", param=param
            )

    def check_count(n: int, param: str) -> None:
        if n > limits.max_documents:
            raise RequestError(f"{n} {param}; the limit is {limits.max_documents} per request", param=param)

    def resolve(documents: list) -> list[Doc]:
        check_count(len(documents), "documents")
        ids = [d.product_id for d in documents if isinstance(d, R.ProductDocument)]
        if ids and catalogue is None:
            raise RequestError(
                "documents name product ids, but no catalogue is loaded (lref serve --products)", param="documents"
            )
        products = iter(catalogue.get(ids) if ids else [])
        out = []
        for d in documents:
            if isinstance(d, R.ProductDocument):
                out.append(Doc(product=next(products)))
            else:
                text = d if isinstance(d, str) else d.text
                check_text(text, "documents")
                out.append(Doc(text=text))
        return out

    def ranked(scores: list[float], top_n: int | None) -> list[int]:
        order = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable: ties keep the input order
        return order[:top_n] if top_n else order

    async def rerank(req: R.RerankRequest, request: Request) -> R.RerankResponse:
        scorer = pick(req.model, RERANKERS, "rerank")
        request.state.model = scorer.name
        check_text(req.query, "query")
        if req.top_n is not None and req.top_n > limits.max_documents:
            raise RequestError(f"top_n={req.top_n} is over the limit of {limits.max_documents}", param="top_n")
        docs = resolve(req.documents)
        scores, extras = await batcher.call(scorer.score, req.query, docs)
        results = []
        for i in ranked(scores, req.top_n):
            d = docs[i]
            doc = None
            if req.return_documents:
                text = d.text if d.product is None else d.product.title
                doc = R.RerankDocument(text=text, product_id=d.product_id)
            results.append(
                R.RerankResult(index=i, relevance_score=scores[i], document=doc, grades=extras[i] if extras else None)
            )
        return R.RerankResponse(model=scorer.name, results=results)

    for path in ("/v1/rerank", "/rerank", "/v2/rerank"):
        router.add_api_route(path, rerank, methods=["POST"], responses=ERRORS, summary="Rerank documents")

    @router.post("/v1/score", responses=ERRORS)
    async def score(req: R.ScoreRequest, request: Request) -> R.ScoreResponse:
        scorer = pick(req.model, RERANKERS, "score")
        request.state.model = scorer.name
        try:
            pairs = req.pairs()
        except ValueError as e:
            raise RequestError(str(e), param="text_2") from None
        check_count(len(pairs), "pairs")
        for q, t in pairs:
            check_text(q, "text_1")
            check_text(t, "text_2")

        def run() -> list[float]:
            out: list[float] = [0.0] * len(pairs)
            by_query: dict[str, list[int]] = {}
            for i, (q, _) in enumerate(pairs):
                by_query.setdefault(q, []).append(i)
            for q, idx in by_query.items():
                s, _ = scorer.score(q, [Doc(text=pairs[i][1]) for i in idx])
                for i, x in zip(idx, s, strict=True):
                    out[i] = x
            return out

        scores = await batcher.call(run)
        return R.ScoreResponse(model=scorer.name, data=[R.ScoreData(index=i, score=s) for i, s in enumerate(scores)])

    @router.post("/v1/search", responses=ERRORS)
    async def search(req: R.SearchRequest, request: Request) -> R.SearchResponse:
        t0 = time.perf_counter()
        check_text(req.query, "query")
        reranker = pick(req.rerank_model, ("ranker", "ltr", "llm"), "search") if req.rerank_model else None
        given = isinstance(req.candidates, list)
        recall = None if given else pick(req.model, ("recall",), "search")
        request.state.model = "+".join(s.name for s in (recall, reranker) if s)
        if given:
            check_count(len(req.candidates), "candidates")
            if catalogue is None:
                raise RequestError(
                    "candidates name product ids, but no catalogue is loaded (lref serve --products)",
                    param="candidates",
                )
            if reranker is None:
                raise RequestError(
                    "candidates given without a rerank_model: nothing to rank them with", param="rerank_model"
                )
        n = req.candidates if isinstance(req.candidates, int) else max(req.top_k, 100)
        if not given and (n < 1 or n > limits.max_documents):
            raise RequestError(f"candidates={n}: give 1 to {limits.max_documents}", param="candidates")
        if reranker is not None and catalogue is None:
            raise RequestError(
                "reranking recalled products needs a catalogue (lref serve --products)", param="rerank_model"
            )

        def run():
            t = time.perf_counter()
            ids, rscore = (list(req.candidates), None) if given else recall.search(req.query, n)
            t_recall = time.perf_counter() - t
            if reranker is None:
                return ids, rscore, rscore, t_recall, 0.0
            t = time.perf_counter()
            scores, _ = reranker.score(req.query, [Doc(product=p) for p in catalogue.get(ids)])
            return ids, scores, rscore, t_recall, time.perf_counter() - t

        ids, scores, rscore, t_recall, t_rerank = await batcher.call(run)
        hits = []
        order = ranked(scores, req.top_k) if reranker else range(min(req.top_k, len(ids)))  # recall: index order
        for i in order:
            p = catalogue.products.get(ids[i]) if catalogue else None
            hits.append(
                R.SearchHit(
                    product_id=ids[i],
                    score=scores[i],
                    recall_score=rscore[i] if rscore else None,
                    title=p.title if p else None,
                )
            )
        timings = R.SearchTimings(
            recall_ms=1e3 * t_recall, rerank_ms=1e3 * t_rerank, total_ms=1e3 * (time.perf_counter() - t0)
        )
        return R.SearchResponse(
            query=req.query,
            model=recall.name if recall else None,
            rerank_model=reranker.name if reranker else None,
            results=hits,
            timings=timings,
        )

    return router
