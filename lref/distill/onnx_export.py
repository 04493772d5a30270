"""The cross-encoder student on ONNX Runtime: export once, quantize int8 with onnxruntime, score pairs.

`torch.ao` eager dynamic quantization (`ranker.quantize_int8`) is deprecated; ONNX Runtime's dynamic
quantization is the maintained CPU int8 path. `export_onnx` traces the student's whole pipeline
(encoder, pooling, head) to `DIR/onnx/model.onnx` and writes `model_int8.onnx` beside it
(`onnxruntime.quantization.quantize_dynamic`, int8 weights, per-batch activation scales).
`OnnxCrossEncoder` scores like `CrossEncoderStudent` (same texts, same truncation, sigmoid), with
int8 batches that never mix queries, for the same reason (activation scales are per batch).

Needs the `onnx` package (for the export and the quantizer) besides `onnxruntime`.
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


def export_onnx(model_dir: str | Path, out_dir: str | Path | None = None, opset: int = 17) -> Path:
    """Export the cross-encoder in `model_dir` to ONNX (fp32 and dynamic int8); returns the folder."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from sentence_transformers.cross_encoder import CrossEncoder

    out = Path(out_dir or Path(model_dir) / "onnx")
    out.mkdir(parents=True, exist_ok=True)
    ce = CrossEncoder(str(model_dir), device="cpu")
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
    with torch.inference_mode():
        torch.onnx.export(Scores(ce), args, str(out / "model.onnx"), input_names=INPUTS, output_names=["scores"],
                          dynamic_axes=axes, opset_version=opset, dynamo=False)  # fmt: skip
    quantize_dynamic(str(out / "model.onnx"), str(out / "model_int8.onnx"), weight_type=QuantType.QInt8)
    ce.tokenizer.save_pretrained(str(out))
    (out / "onnx.json").write_text(json.dumps({"max_length": ce.max_seq_length, "source": str(model_dir)}), "utf-8")
    log.info("exported %s to %s (fp32 and int8)", model_dir, out)
    return out


class OnnxCrossEncoder:
    """A cross-encoder student on ONNX Runtime; exports it on first use (`DIR/onnx/`)."""

    def __init__(self, model_dir: str | Path, batch_size: int = 64, int8: bool = True, threads: int | None = None):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        from lref.distill.ranker import read_meta

        if not Path(model_dir).is_dir():
            raise FileNotFoundError(f"cross-encoder model folder not found: {model_dir}")
        d = Path(model_dir) / "onnx"
        if not (d / "model_int8.onnx").exists():
            export_onnx(model_dir, d)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        name = "model_int8.onnx" if int8 else "model.onnx"
        self.session = ort.InferenceSession(str(d / name), opts, providers=["CPUExecutionProvider"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(d))
        self.max_length = json.loads((d / "onnx.json").read_text(encoding="utf-8"))["max_length"]
        self.max_words = read_meta(model_dir).get("config", {}).get("max_words", STUDENT_PRODUCT_WORDS)
        self.batch_size, self.int8 = batch_size, int8

    def predict(self, pairs: list[tuple[str, str]]) -> list[float]:
        """Sigmoid scores of (query, text) pairs in batches of `batch_size`, as given."""
        out: list[float] = []
        for s in range(0, len(pairs), self.batch_size):
            chunk = pairs[s : s + self.batch_size]
            enc = self.tokenizer([q for q, _ in chunk], [t for _, t in chunk], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="np")  # fmt: skip
            feed = {k: enc[k].astype(np.int64) for k in INPUTS}
            logits = self.session.run(["scores"], feed)[0].reshape(-1)
            out += (1.0 / (1.0 + np.exp(-logits))).tolist()
        return out

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
