"""Teacher scoring at scale: label distributions for judged pairs and augmented candidates, resumable.

For each query the teacher scores its judged products and the top-N catalogue products by BM25 and by
zero-shot MiniLM that were not judged (augmentation, as in Walmart's distillation recipe). The output
is append-only JSONL, one row per pair with `probs` per grade and the expected-grade `score`, written
and fsync'ed chunk by chunk. A rerun reads the keys already written (cutting a torn last line left by
a kill), skips them and scores only the rest, so after any interruption every pair ends up exactly
once. Pairs that fail go to `<out>.errors.jsonl` with the reason and are retried on the next run.

The teacher is an LLM judge (an `Engine`: a grade distribution per pair) or a trained student folder
(`StudentTeacher`: a cross-encoder or bi-encoder, e.g. all-mpnet-base-v2 fine-tuned on the gold grades), whose
score in [0, 1] is written in the same file, so the students train on either alike.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from lref.data import Corpus, Product, render_product

log = logging.getLogger(__name__)


def candidate_pairs(corpus: Corpus, top_bm25: int = 10, top_dense: int = 10, embedder=None) -> list[dict]:
    """Judged pairs plus, per query, unjudged top-N products by BM25 and by MiniLM cosine over the catalogue.

    Rows: {query_id, query, product_id, source: judged|bm25|dense, gold_grade (judged only)}, grouped by
    query so a server can reuse the cached prompt prefix.
    """
    from lref.rag.bm25 import BM25Index

    by_q: dict[str, list[dict]] = {}
    texts: dict[str, str] = {}
    for j in corpus.judgments:
        texts[j.query_id] = j.query
        by_q.setdefault(j.query_id, []).append(
            {
                "query_id": j.query_id,
                "query": j.query,
                "product_id": j.product_id,
                "source": "judged",
                "gold_grade": j.grade,
            }
        )
    qids = sorted(by_q)
    ids = list(corpus.products)
    extra: dict[str, list[tuple[str, str]]] = {q: [] for q in qids}
    if top_bm25 > 0:
        bm25 = BM25Index(corpus.products)
        for q in qids:
            extra[q] += [(pid, "bm25") for pid in bm25.top(texts[q], top_bm25 + len(by_q[q]))]
    if top_dense > 0:
        if embedder is None:
            from lref.distill.recall import BiEncoderStudent

            embedder = BiEncoderStudent(None)
        emb = embedder.embed_products([corpus.products[p] for p in ids], progress=True)
        qe = embedder.embed_texts([texts[q] for q in qids])
        order = np.argsort(-(qe @ emb.T), axis=1)
        for i, q in enumerate(qids):
            extra[q] += [(ids[x], "dense") for x in order[i, : top_dense + len(by_q[q])]]
    out = []
    for q in qids:
        seen = {r["product_id"] for r in by_q[q]}
        out += by_q[q]
        counts = {"bm25": 0, "dense": 0}
        limit = {"bm25": top_bm25, "dense": top_dense}
        for pid, src in extra[q]:
            if pid not in seen and counts[src] < limit[src]:
                seen.add(pid)
                counts[src] += 1
                out.append({"query_id": q, "query": texts[q], "product_id": pid, "source": src, "gold_grade": None})
    return out


def _resume_keys(path: Path) -> set[tuple[str, str]]:
    """Keys already written to `path`, after cutting a torn (unterminated) last line."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        log.warning("%s: dropping a torn last line (%d bytes) left by an interrupted run", path, len(data) - cut)
        with path.open("r+b") as f:
            f.truncate(cut)
        data = data[:cut]
    keys = set()
    for n, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if line.strip():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s line %d: unreadable row ignored", path, n)
                continue
            keys.add((str(r["query_id"]), str(r["product_id"])))
    return keys


def score_chunk(
    engine, products: Mapping[str, Product], pairs: Sequence[dict], max_product_tokens: int = 256
) -> tuple[list[dict], list[dict]]:
    """Score one chunk of pairs in one `engine.score` call: (scored rows, failed pairs with their `error`).

    The per-batch work of both `score_pairs` and the Ray job (`lref.batch`). A pair whose product is not in
    `products` fails alone; an engine failure fails the chunk (recorded, retried on the next run).
    """
    from lref.prompts import judgment_messages

    tok = getattr(engine, "tokenizer", None)
    teacher = getattr(engine, "name", None) or type(engine).__name__
    scheme = engine.scheme
    chunk, bad = [], []
    for p in pairs:
        product = products.get(p["product_id"])
        if product is None:
            bad.append({**p, "error": "product not in the catalogue"})
        else:
            chunk.append((p, judgment_messages(p["query"], render_product(product, max_product_tokens, tok), scheme)))
    try:
        results = engine.score([m for _, m in chunk]) if chunk else []
    except Exception as e:  # a failing batch is recorded and retried on the next run
        log.warning("teacher batch of %d pairs failed: %s", len(chunk), e)
        return [], bad + [{**p, "error": f"{type(e).__name__}: {e}"} for p, _ in chunk]
    rows = [
        {**p, "probs": r.probs_by_label(scheme), "score": r.score, "label": r.label, "teacher": teacher}
        for (p, _), r in zip(chunk, results, strict=True)
    ]
    return rows, bad


class StudentTeacher:
    """A student folder as the teacher: `score_chunk` writes its pair scores as the teacher's expected grade.

    A cross-encoder (`lref distill ranker`: sigmoid output trained on grade / max grade) gives a calibrated
    score; a bi-encoder's cosine is clipped to [0, 1] (not calibrated). The kind comes from the folder's
    `distill.json`, else from sentence-transformers' `model_type` (CrossEncoder), else it is a bi-encoder, as a
    plain sentence-transformers model folder (all-mpnet-base-v2) is. Rows have no grade distribution
    (`probs` null); `label` is the grade nearest to the score.
    """

    def __init__(self, model_dir: str | Path, scheme, batch_size: int = 64):
        from lref.distill.ranker import CrossEncoderStudent
        from lref.distill.recall import BiEncoderStudent
        from lref.distill.student import read_meta, student_folder

        folder = student_folder(model_dir, "teacher student")
        self.kind = read_meta(folder).get("kind") or student_kind(folder)
        self.scheme = scheme
        self.name = f"{self.kind}:{folder.name}"
        cls = CrossEncoderStudent if self.kind == "cross-encoder" else BiEncoderStudent
        self.student = cls(folder, batch_size=batch_size)

    def label_of(self, score: float) -> str:
        """The scheme's grade nearest to a score in [0, 1]."""
        lo, hi = self.scheme.min_value, self.scheme.max_value
        return min(self.scheme.grades, key=lambda g: abs(g.value - (lo + score * (hi - lo)))).label

    def score_chunk(self, products: Mapping[str, Product], pairs: Sequence[dict]) -> tuple[list[dict], list[dict]]:
        """(scored rows, failed pairs), as `score_chunk` for an engine."""
        ok = [p for p in pairs if p["product_id"] in products]
        bad = [{**p, "error": "product not in the catalogue"} for p in pairs if p["product_id"] not in products]
        try:
            s = self.student.score_pairs([p["query"] for p in ok], [products[p["product_id"]] for p in ok])
        except Exception as e:  # as for an engine: recorded, retried on the next run
            log.warning("teacher batch of %d pairs failed: %s", len(ok), e)
            return [], bad + [{**p, "error": f"{type(e).__name__}: {e}"} for p in ok]
        rows = []
        for p, x in zip(ok, s, strict=True):
            x = min(1.0, max(0.0, float(x)))
            rows.append({**p, "probs": None, "score": x, "label": self.label_of(x), "teacher": self.name})
        return rows, bad


def student_kind(folder: str | Path) -> str:
    """The kind of a model folder: `cross-encoder` when sentence-transformers saved it as a CrossEncoder, else
    `bi-encoder`."""
    cfg = Path(folder) / "config_sentence_transformers.json"
    model_type = json.loads(cfg.read_text(encoding="utf-8")).get("model_type") if cfg.exists() else None
    return "cross-encoder" if model_type == "CrossEncoder" else "bi-encoder"


def score_pairs(
    engine,
    corpus: Corpus,
    pairs: Sequence[dict],
    out: str | Path,
    chunk_size: int = 64,
    max_product_tokens: int = 256,
    progress: bool = True,
) -> dict:
    """Score `pairs` with `engine` (or a `StudentTeacher`) into `out` (appending), skipping pairs already there.

    Returns counts."""
    from tqdm.auto import tqdm

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    errors_path = out.with_name(out.stem + ".errors.jsonl")
    errors_path.unlink(missing_ok=True)  # every earlier failure is retried now; the file lists what still fails
    done = _resume_keys(out)
    todo = [p for p in pairs if (p["query_id"], p["product_id"]) not in done]
    stats = {
        "judged": sum(p["source"] == "judged" for p in pairs),
        "augmented": sum(p["source"] != "judged" for p in pairs),
        "skipped": len(pairs) - len(todo),
        "scored": 0,
        "errors": 0,
    }
    with out.open("a", encoding="utf-8") as f, tqdm(total=len(todo), disable=not progress, desc="teacher") as bar:
        for s in range(0, len(todo), chunk_size):
            chunk = todo[s : s + chunk_size]
            if isinstance(engine, StudentTeacher):
                rows, bad = engine.score_chunk(corpus.products, chunk)
            else:
                rows, bad = score_chunk(engine, corpus.products, chunk, max_product_tokens)
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
            if bad:
                with errors_path.open("a", encoding="utf-8") as ef:
                    for b in bad:
                        ef.write(json.dumps(b, ensure_ascii=False) + "\n")
            stats["scored"] += len(rows)
            stats["errors"] += len(bad)
            bar.update(len(rows) + len(bad))
    log.info("teacher scores: %s -> %s", stats, out)
    return stats
