"""The cross-encoder on ONNX Runtime: same fp32 scores as torch, int8 close to them, served by `lref serve`."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("onnx")  # the exporter and the quantizer need it (the `onnx` extra)


@pytest.fixture(scope="module")
def ranker_copy(students, tmp_path_factory):
    """A copy of the session's tiny ranker, so its exported onnx/ folder stays out of the other tests' way."""
    d = tmp_path_factory.mktemp("onnx") / "ranker"
    shutil.copytree(students["ranker"], d)
    return str(d)


def test_onnx_scores_equal_torch_and_int8_batches_per_query(ranker_copy, corpus):
    from lref.distill.onnx_export import OnnxCrossEncoder
    from lref.distill.ranker import CrossEncoderStudent

    js = corpus.judgments
    q, p = [j.query for j in js], [corpus.products[j.product_id] for j in js]
    torch_fp32 = np.array(CrossEncoderStudent(ranker_copy).score_pairs(q, p))
    onnx_fp32 = np.array(OnnxCrossEncoder(ranker_copy, int8=False).score_pairs(q, p))
    np.testing.assert_allclose(onnx_fp32, torch_fp32, atol=1e-5)
    int8 = OnnxCrossEncoder(ranker_copy, int8=True)
    both = np.array(int8.score_pairs(q, p))
    assert np.abs(both - torch_fp32).max() < 0.05 and not np.allclose(both, torch_fp32, atol=1e-7)
    first = [i for i, j in enumerate(js) if j.query_id == js[0].query_id]
    alone = int8.score_pairs([q[i] for i in first], [p[i] for i in first])
    np.testing.assert_allclose(alone, both[first], atol=1e-6)  # a query's int8 scores do not depend on the others


def test_lref_serve_ranker_backend_onnx(ranker_copy, corpus):
    import httpx

    from lref.distill.features import student_text
    from lref.distill.onnx_export import OnnxCrossEncoder
    from lref.serve.config import ServeConfig
    from lref.serve.embedded import BackgroundServer, app_for

    js = [j for j in corpus.judgments if j.query_id == corpus.judgments[0].query_id]
    want = OnnxCrossEncoder(ranker_copy).score_pairs(
        [j.query for j in js], [corpus.products[j.product_id] for j in js]
    )
    docs = [student_text(corpus.products[j.product_id]) for j in js]
    with BackgroundServer(app_for(ServeConfig(ranker=ranker_copy, ranker_backend="onnx"))) as s:
        res = httpx.post(
            f"{s.url}/v1/rerank", json={"model": "ranker", "query": js[0].query, "documents": docs}
        ).json()
    got = {x["index"]: x["relevance_score"] for x in res["results"]}
    np.testing.assert_allclose([got[i] for i in range(len(js))], want, atol=1e-6)


def test_export_is_fused_and_keyed_on_its_options(ranker_copy, corpus):
    import json
    from pathlib import Path

    import onnx

    from lref.distill.onnx_export import DEFAULT_OPTIONS, OnnxCrossEncoder, cached_options, export_onnx
    from lref.distill.ranker import CrossEncoderStudent

    d = Path(ranker_copy) / "onnx"

    def ops(name):
        return {n.op_type for n in onnx.load(str(d / name)).graph.node}

    OnnxCrossEncoder(ranker_copy)  # default options: the export is made or reused
    assert cached_options(d) == DEFAULT_OPTIONS
    assert "Attention" in ops("model.onnx") and "SkipLayerNormalization" in ops("model.onnx")
    assert "QAttention" in ops("model_int8.onnx") or "MatMulInteger" in ops("model_int8.onnx")
    js = corpus.judgments[:12]
    q, p = [j.query for j in js], [corpus.products[j.product_id] for j in js]
    want = CrossEncoderStudent(ranker_copy).score_pairs(q, p)
    plain = OnnxCrossEncoder(ranker_copy, int8=False, fuse=False)  # other options: exported again
    assert json.loads((d / "onnx.json").read_text())["options"]["fuse"] is False
    assert "Attention" not in ops("model.onnx")
    np.testing.assert_allclose(plain.score_pairs(q, p), want, atol=1e-5)
    fused = OnnxCrossEncoder(ranker_copy, int8=False)  # back to the defaults: fused again, same scores
    assert cached_options(d) == DEFAULT_OPTIONS and "Attention" in ops("model.onnx")
    np.testing.assert_allclose(fused.score_pairs(q, p), want, atol=1e-5)
    with pytest.raises(ValueError, match="unknown ONNX export options"):
        export_onnx(ranker_copy, d, int4=True)


def test_predict_sorts_by_length_but_keeps_the_order(ranker_copy):
    from lref.distill.onnx_export import OnnxCrossEncoder

    ce = OnnxCrossEncoder(ranker_copy, int8=False, batch_size=2)
    pairs = [("q", "short"), ("a much longer query", "a much longer product text than the others"), ("q", "mid text")]
    one_by_one = [ce.predict([x])[0] for x in pairs]
    np.testing.assert_allclose(ce.predict(pairs), one_by_one, atol=1e-5)
    assert ce.predict([]) == []
