"""Fixtures of the relevance-server tests: tiny students trained a few steps on real esci150 products,
their offline `lref eval` scores, and one running server holding all of them and the tiny LLM judge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

KEY = "serve-key"


def _cfg(base, **kw):
    from lref.distill.student import StudentConfig

    return StudentConfig(
        base=base, max_steps=3, batch_size=8, learning_rate=1e-3, warmup_ratio=0.0, max_length=32, **kw
    )


@pytest.fixture(scope="session")
def corpus(esci_slice):
    from lref.data import load_dir

    return load_dir(esci_slice)


@pytest.fixture(scope="session")
def students(corpus, tiny_bert, tmp_path_factory):
    """{ranker, recall, ltr}: folders of a cross-encoder, a bi-encoder with its catalogue index, and an LTR model."""
    from lref.distill.ltr import train_ltr
    from lref.distill.ranker import train_ranker
    from lref.distill.recall import BiEncoderStudent, build_index, train_recall
    from lref.distill.student import build_examples

    root = tmp_path_factory.mktemp("students")
    ex = build_examples(corpus)
    train_ranker(ex, corpus.products, _cfg(tiny_bert), root / "ranker")
    train_recall(ex, corpus.products, _cfg(tiny_bert, pairs_per_query=4), root / "recall")
    build_index(BiEncoderStudent(root / "recall"), corpus.products, root / "recall" / "index", progress=False)
    train_ltr(corpus, root / "ltr", ranker=str(root / "ranker"), recall=str(root / "recall"), rounds=20,
              min_data_in_leaf=2)  # fmt: skip
    return {k: str(root / k) for k in ("ranker", "recall", "ltr")}


@pytest.fixture(scope="session")
def offline(students, tiny_model, esci_slice, tmp_path_factory):
    """{served name: {(query_id, product_id): score}} from `lref eval`'s scores.jsonl, int8 where served int8."""
    from lref.cli import main

    runs = {
        "ranker": ["--scorer", "cross-encoder", "--model", students["ranker"], "--int8"],
        "ltr": ["--scorer", "ltr", "--model", students["ltr"], "--int8"],
        "recall": ["--scorer", "bi-encoder", "--model", students["recall"]],
        "tiny": ["--scorer", "llm", "--model", str(tiny_model)],
    }
    out = {}
    for name, argv in runs.items():
        d = tmp_path_factory.mktemp(f"eval_{name}")
        assert main(["eval", "--data", str(esci_slice), *argv, "--out", str(d)]) == 0
        rows = [json.loads(x) for x in (Path(d) / "scores.jsonl").read_text().splitlines()]
        out[name] = {(r["query_id"], r["product_id"]): r for r in rows}
    return out


@pytest.fixture(scope="session")
def serve_cfg(students, tiny_model, esci_slice):
    from lref.serve.config import ServeConfig

    return ServeConfig(
        model=str(tiny_model), served_model_name="tiny", ranker=students["ranker"], ltr=students["ltr"],
        recall=students["recall"], products=str(Path(esci_slice) / "products.jsonl"), api_key=KEY,
        max_documents=120, max_text_chars=2000,
    )  # fmt: skip


@pytest.fixture(scope="session")
def server(serve_cfg):
    from lref.serve.embedded import BackgroundServer, app_for

    with BackgroundServer(app_for(serve_cfg)) as s:
        yield s


@pytest.fixture()
def client(server):
    import httpx

    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
        yield c
