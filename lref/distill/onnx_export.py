"""The cross-encoder student on ONNX Runtime: export once, fuse, quantize int8 with onnxruntime, score pairs.

`torch.ao` eager dynamic quantization (`ranker.quantize_int8`) is deprecated; ONNX Runtime's dynamic
quantization is the maintained CPU int8 path. `export_onnx` traces the student's whole pipeline
(encoder, pooling, head) with eager attention to `DIR/onnx/model.onnx`, fuses it with ONNX Runtime's
transformer optimizer (Attention, EmbedLayerNormalization, SkipLayerNormalization, BiasGelu: the traced
SDPA graph does not fuse) and writes `model_int8.onnx` beside it (`quantize_dynamic`: int8 weights per
channel, in 7 bits (`reduce_range`) so that AVX2's u8*s8 multiply-add without VNNI cannot saturate, and
per-batch activation scales). The options are recorded in `onnx.json`; a folder exported with other options
is exported again. `OnnxCrossEncoder` scores like `CrossEncoderStudent` (same texts, same truncation,
sigmoid), with int8 batches that never mix queries, for the same reason (activation scales are per batch).

Needs the `onnx` package (for the export, the optimizer and the quantizer) besides `onnxruntime`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from lref.data import Product
from lref.distill.features import STUDENT_PRODUCT_WORDS, student_text

log = logging.getLogger(__name__)
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
# what an export is keyed on: a cached folder written with other options is exported again
DEFAULT_OPTIONS = {"format": 2, "fuse": True, "per_channel": True, "reduce_range": True, "opset": 17}


def export_onnx(model_dir: str | Path, out_dir: str | Path | None = None, **options) -> Path:
    """Export the cross-encoder in `model_dir` to ONNX (fused fp32 and dynamic int8); returns the folder.

    `options` override `DEFAULT_OPTIONS` (`fuse`, `per_channel`, `reduce_range`, `opset`).
    """
    import torch
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from sentence_transformers.cross_encoder import CrossEncoder

    unknown = set(options) - set(DEFAULT_OPTIONS)
    if unknown:
        raise ValueError(f"unknown ONNX export options {sorted(unknown)} (known: {sorted(DEFAULT_OPTIONS)})")
    opts = DEFAULT_OPTIONS | options
    out = Path(out_dir or Path(model_dir) / "onnx")
    out.mkdir(parents=True, exist_ok=True)
    # eager attention traces to the MatMul/Softmax pattern the transformer optimizer fuses into Attention
    ce = CrossEncoder(str(model_dir), device="cpu", model_kwargs={"attn_implementation": "eager"})
    ce.eval()

    class Scores(torch.nn.Module):
        def __init__(self, ce):
            super().__init__()
            self.ce = ce

        def forward(self, input_ids, attention_mask, token_type_ids):
            feats = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            return self.ce(feats)["scores"]

    enc = ce.tokenizer([("query", "a product text")] * 2, padding=True, return_tensors="pt")
    args = tuple(enc[k] for k in INPUTS)
    axes = {k: {0: "batch", 1: "seq"} for k in INPUTS} | {"scores": {0: "batch"}}
    fp32 = out / "model.onnx"
    with torch.inference_mode():
        torch.onnx.export(Scores(ce), args, str(fp32), input_names=INPUTS, output_names=["scores"],
                          dynamic_axes=axes, opset_version=opts["opset"], dynamo=False)  # fmt: skip
    if opts["fuse"]:
        fuse_bert(fp32, ce.model.config)
    quantize_dynamic(str(fp32), str(out / "model_int8.onnx"), weight_type=QuantType.QInt8,
                     per_channel=opts["per_channel"], reduce_range=opts["reduce_range"],
                     extra_options={"DefaultTensorType": TensorProto.FLOAT})  # fmt: skip
    ce.tokenizer.save_pretrained(str(out))
    meta = {"max_length": ce.max_seq_length, "source": str(model_dir), "options": opts}
    (out / "onnx.json").write_text(json.dumps(meta), "utf-8")
    log.info("exported %s to %s (fp32 and int8, %s)", model_dir, out, opts)
    return out


def fuse_bert(path: Path, config) -> dict:
    """Fuse a BERT graph in place with ONNX Runtime's transformer optimizer; returns the fused-op counts."""
    from onnxruntime.transformers.optimizer import optimize_model

    m = optimize_model(str(path), model_type="bert", num_heads=config.num_attention_heads,
                       hidden_size=config.hidden_size)  # fmt: skip
    m.save_model_to_file(str(path))
    fused = {k: v for k, v in m.get_fused_operator_statistics().items() if v}
    log.info("fused %s: %s", path, fused)
    return fused


def cached_options(d: Path) -> dict | None:
    """The options the export in `d` was made with, or None when there is no complete export."""
    if not all((d / n).exists() for n in ("model.onnx", "model_int8.onnx", "onnx.json")):
        return None
    return json.loads((d / "onnx.json").read_text(encoding="utf-8")).get("options")


def session_options(threads: int | None):
    """Sequential execution, every graph optimisation, `threads` intra-op threads (one inter-op thread)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    if threads:
        opts.intra_op_num_threads = threads
    return opts


class OnnxCrossEncoder:
    """A cross-encoder student on ONNX Runtime; exports it on first use (`DIR/onnx/`), again if options changed."""

    def __init__(
        self, model_dir: str | Path, batch_size: int = 64, int8: bool = True, threads: int | None = None, **options
    ):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        from lref.distill.ranker import read_meta

        if not Path(model_dir).is_dir():
            raise FileNotFoundError(f"cross-encoder model folder not found: {model_dir}")
        d = Path(model_dir) / "onnx"
        if cached_options(d) != DEFAULT_OPTIONS | options:
            export_onnx(model_dir, d, **options)
        name = "model_int8.onnx" if int8 else "model.onnx"
        opts = session_options(threads)
        self.session = ort.InferenceSession(str(d / name), opts, providers=["CPUExecutionProvider"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(d))
        self.max_length = json.loads((d / "onnx.json").read_text(encoding="utf-8"))["max_length"]
        self.max_words = read_meta(model_dir).get("config", {}).get("max_words", STUDENT_PRODUCT_WORDS)
        self.batch_size, self.int8 = batch_size, int8

    def predict(self, pairs: list[tuple[str, str]]) -> list[float]:
        """Sigmoid scores of (query, text) pairs, in batches of `batch_size` cut from the pairs sorted by length.

        Sorting (longest first, stable, as `CrossEncoder.predict` does) makes a batch pad little; the order
        depends only on `pairs`, so the same pairs are always batched alike.
        """
        order = sorted(range(len(pairs)), key=lambda i: -len(pairs[i][0]) - len(pairs[i][1]))
        out = np.empty(len(pairs), dtype=np.float64)
        for s in range(0, len(pairs), self.batch_size):
            idx = order[s : s + self.batch_size]
            enc = self.tokenizer([pairs[i][0] for i in idx], [pairs[i][1] for i in idx], padding=True,
                                 truncation=True, max_length=self.max_length, return_tensors="np")  # fmt: skip
            feed = {k: enc[k].astype(np.int64) for k in INPUTS}
            out[idx] = self.session.run(["scores"], feed)[0].reshape(-1)
        return (1.0 / (1.0 + np.exp(-out))).tolist()

    def score_texts(self, queries: list[str], texts: list[str], progress: bool = False) -> list[float]:
        """Scores of (query, product text) pairs; int8 batches never mix queries (per-batch activation scales)."""
        pairs = list(zip(queries, texts, strict=True))
        if not self.int8:
            return self.predict(pairs)
        out: list[float] = []
        start = 0
        for end in range(1, len(pairs) + 1):
            if end == len(pairs) or pairs[end][0] != pairs[start][0]:
                out += self.predict(pairs[start:end])
                start = end
        return out

    def score_pairs(self, queries: list[str], products: list[Product], progress: bool = False) -> list[float]:
        return self.score_texts(queries, [student_text(p, self.max_words) for p in products], progress)
