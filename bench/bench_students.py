"""Students vs the LLM judge: (query, product) pairs scored per second on CPU.

    PYTHONPATH=. python bench/bench_students.py [--threads 2] [--pairs 512] [--judge-pairs 16] [--ranker DIR] [--onnx]

The students (cross-encoder ranker, bi-encoder recall model, both MiniLM-L6) score pairs cut to 64
tokens. The baseline, measured in the same run, is the LLM judge's one-forward-pass scoring of the
same pairs with the full judgment prompt, on a randomly initialised Qwen2 of the 0.5B class (hidden
896, 24 layers; weights do not change the speed, and no download is needed). Without --ranker /
--recall the students are fresh MiniLM models (same architecture, same speed as trained ones).
`--onnx` adds the cross-encoder on ONNX Runtime (`lref.distill.onnx_export`), fp32 and dynamic int8,
both as a plain export (unfused, int8 per tensor) and as lref exports it (fused by ONNX Runtime's
transformer optimizer, int8 per channel with reduce_range), each exported into a temporary copy; with
`--ranker` it also reports nDCG@10 over the esci150 judgments (all, or the first `--ndcg-queries`
queries) of fp32 torch, torch int8 and each ONNX int8 (each query's candidates scored together, as
`lref eval` does).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]


def rate(fn, n: int) -> float:
    fn(min(n, 8))  # warm-up
    t0 = time.perf_counter()
    fn(n)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "esci150"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=512)
    ap.add_argument("--judge-pairs", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--ranker")
    ap.add_argument("--recall")
    ap.add_argument("--onnx", action="store_true", help="also the cross-encoder on ONNX Runtime (fp32, int8)")
    ap.add_argument("--ndcg-queries", type=int, default=0, help="nDCG@10 over the first N queries (0: all)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.cross_encoder import CrossEncoder

    from lref.data import load_dir, render_product
    from lref.distill.features import student_text
    from lref.distill.ranker import new_cross_encoder, quantize_int8
    from lref.engines.hf import HFEngine
    from lref.models import init_tiny
    from lref.prompts import judgment_messages
    from lref.rag.embedder import DEFAULT_MODEL, resolve_model_path

    minilm = resolve_model_path(DEFAULT_MODEL)

    corpus = load_dir(args.data)
    js = (corpus.judgments * (1 + args.pairs // len(corpus.judgments)))[: args.pairs]
    queries = [j.query for j in js]
    texts = [student_text(corpus.products[j.product_id]) for j in js]

    # the student's own architecture: MiniLM -> mean pooling -> one-logit head (a trained one with --ranker)
    ce = CrossEncoder(args.ranker, device="cpu") if args.ranker else new_cross_encoder(minilm, args.max_length, "mean")
    ce.max_length = args.max_length
    bi = SentenceTransformer(args.recall or minilm, device="cpu")
    bi.max_seq_length = args.max_length

    def ce_score(n):
        ce.predict(list(zip(queries[:n], texts[:n], strict=True)), batch_size=64, show_progress_bar=False)

    def bi_score(n):  # a pair = one query and one product embedding (the worst case: no caching)
        q = bi.encode(queries[:n], batch_size=64, normalize_embeddings=True)
        p = bi.encode(texts[:n], batch_size=64, normalize_embeddings=True)
        (q * p).sum(-1)

    print(f"load average at the start (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    results = {"cross-encoder": rate(ce_score, args.pairs), "bi-encoder": rate(bi_score, args.pairs)}
    print({k: round(v, 1) for k, v in results.items()}, flush=True)
    quality = {}
    if args.onnx:
        quality = onnx_rows(args, ce, corpus, queries, texts, results, tempfile.mkdtemp())
    quantize_int8(ce)  # what `lref eval --int8` and CrossEncoderStudent(int8=True) serve
    results["cross-encoder int8"] = rate(ce_score, args.pairs)
    if args.ranker and args.onnx:
        from lref.distill.ranker import CrossEncoderStudent

        quality["torch int8"] = ndcg10(corpus, CrossEncoderStudent(args.ranker, int8=True), args.ndcg_queries)

    with tempfile.TemporaryDirectory() as tmp:
        path = init_tiny(Path(tmp) / "judge", args.data, vocab_size=2048, hidden_size=896, num_layers=24, num_heads=14)
        engine = HFEngine.from_pretrained(str(path), batch_size=8)
        n_params = sum(p.numel() for p in engine.model.parameters())
        prompts = [
            judgment_messages(
                j.query, render_product(corpus.products[j.product_id], 256, engine.tokenizer), corpus.scheme
            )
            for j in js[: args.judge_pairs]
        ]
        prompt_tokens = sum(len(x) for x in engine.encode(prompts)) / len(prompts)
        judge = rate(lambda n: engine.score(prompts[:n]), len(prompts))

    print(f"load average at the end (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"threads {args.threads}, students at {args.max_length} tokens, judge prompts {prompt_tokens:.0f} tokens, "
        f"judge {n_params / 1e6:.0f}M params"
    )
    print(f"{'scorer':<22}{'pairs/s':>10}{'x judge':>10}")
    print(f"{'LLM judge (0.5B-class)':<22}{judge:>10.1f}{1.0:>10.1f}")
    for name, r in results.items():
        print(f"{name:<22}{r:>10.1f}{r / judge:>10.1f}")
    for name, v in quality.items():
        print(f"nDCG@10 cross-encoder {name}: {v:.4f} ({v - quality['fp32']:+.4f} against fp32)")


def ndcg10(corpus, student, n_queries: int = 0) -> float:
    """Mean nDCG@10 of a cross-encoder over the judged pairs of the first `n_queries` queries (0: all),
    queries scored whole (as `lref eval` does)."""
    from lref.eval.metrics import mean_ndcg

    js = corpus.judgments
    if n_queries:
        keep = list(dict.fromkeys(j.query_id for j in js))[:n_queries]
        js = [j for j in js if j.query_id in set(keep)]
    s = student.score_pairs([j.query for j in js], [corpus.products[j.product_id] for j in js])
    return mean_ndcg([j.query_id for j in js], [j.grade for j in js], s, 10)


def onnx_rows(args, ce, corpus, queries, texts, results, tmp) -> dict:
    """pairs/s of the cross-encoder on ONNX Runtime at the same length, plain and as lref exports it (fp32,
    int8), each exported into a copy of the ranker in `tmp`; nDCG@10 of each int8 with --ranker."""
    import shutil

    from lref.distill.onnx_export import OnnxCrossEncoder

    src = str(Path(tmp) / "ce")
    if args.ranker:  # a copy: the exports below must not replace the ranker's own onnx/ folder
        shutil.copytree(args.ranker, src, ignore=shutil.ignore_patterns("onnx", "_checkpoints"))
    else:
        ce.save_pretrained(src)
    plain = {"fuse": False, "per_channel": False, "reduce_range": False}
    quality = {}
    for label, opts in (("onnx plain", plain), ("onnx", {})):
        for int8 in (False, True):
            student = OnnxCrossEncoder(src, int8=int8, threads=args.threads, **opts)
            student.max_length = args.max_length

            def score(n, student=student):  # batches of 64, sorted by length, as the torch rows are timed
                student.predict(list(zip(queries[:n], texts[:n], strict=True)))

            name = f"{label}{' int8' if int8 else ' fp32'}"
            results[f"cross-encoder {name}"] = rate(score, args.pairs)
            print(name, round(results[f"cross-encoder {name}"], 1), flush=True)
            if args.ranker and int8:
                quality[name] = ndcg10(corpus, student, args.ndcg_queries)
    if args.ranker:
        from lref.distill.ranker import CrossEncoderStudent

        quality = {"fp32": ndcg10(corpus, CrossEncoderStudent(args.ranker), args.ndcg_queries), **quality}
    return quality


if __name__ == "__main__":
    main()
