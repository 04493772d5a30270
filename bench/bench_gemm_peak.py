"""The ceiling a MiniLM-L6 cross-encoder can reach on this CPU: ONNX Runtime's own GEMM rates.

    PYTHONPATH=. python bench/bench_gemm_peak.py [--threads 2] [--tokens 64] [--batch 32]

Issue 11 asks for 400 pairs/s at 64 tokens. Almost all of a pair's work is the encoder's linear layers
(6 layers x (4 x 384x384 + 2 x 384x1536) multiply-adds per token); this bench times exactly those
GEMMs, alone, with nothing else in the graph, in ONNX Runtime (the engine lref serves the ranker with):

- fp32 `MatMul`, the baseline in the same run;
- int8 `MatMulInteger` (u8 activations x s8 weights, already quantized: the integer kernel alone);
- int8 `DynamicQuantizeMatMul` (what `quantize_dynamic` emits: quantize the activations, then GEMM).

It prints GOP/s for each and the pairs/s that rate would give if a pair cost nothing but its linear
layers (attention scores, softmax, LayerNorm, GELU, tokenisation all free). That is an upper bound on
any MiniLM-L6 path through ONNX Runtime on this machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HIDDEN, FFN, LAYERS = 384, 1536, 6
# (K, N, count per layer): Q, K, V, attention output; FFN up; FFN down.
SHAPES = [(HIDDEN, HIDDEN, 4), (HIDDEN, FFN, 1), (FFN, HIDDEN, 1)]


def macs_per_token() -> int:
    return LAYERS * sum(k * n * c for k, n, c in SHAPES)


def _layer_graph(kind: str, m: int, rng: np.random.Generator) -> tuple[bytes, dict]:
    """One encoder layer's GEMMs as independent nodes of one graph (one session, one thread pool)."""
    nodes, inits, feeds, outputs = [], [], {}, []
    a_type = TensorProto.UINT8 if kind == "int8" else TensorProto.FLOAT
    y_type = TensorProto.INT32 if kind == "int8" else TensorProto.FLOAT
    inputs = []
    for k in sorted({k for k, _, _ in SHAPES}):
        name = f"A{k}"
        inputs.append(helper.make_tensor_value_info(name, a_type, [m, k]))
        feeds[name] = (
            rng.integers(0, 256, (m, k), dtype=np.uint8)
            if kind == "int8"
            else rng.standard_normal((m, k)).astype(np.float32)
        )
    if kind == "int8":
        inits += [
            numpy_helper.from_array(np.array(128, dtype=np.uint8), "azp"),
            numpy_helper.from_array(np.array(0, dtype=np.int8), "wzp"),
        ]
    i = 0
    for k, n, count in SHAPES:
        for _ in range(count):
            w, y = f"W{i}", f"Y{i}"
            if kind == "fp32":
                inits.append(numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), w))
                nodes.append(helper.make_node("MatMul", [f"A{k}", w], [y]))
            elif kind == "int8":
                inits.append(numpy_helper.from_array(rng.integers(-64, 64, (k, n), dtype=np.int8), w))
                nodes.append(helper.make_node("MatMulInteger", [f"A{k}", w, "azp", "wzp"], [y]))
            else:  # what quantize_dynamic emits: activations quantized on every call, then the int8 GEMM
                inits += [
                    numpy_helper.from_array(rng.integers(-64, 64, (k, n), dtype=np.int8), w),
                    numpy_helper.from_array(np.full((n,), 0.01, dtype=np.float32), f"S{i}"),
                    numpy_helper.from_array(np.zeros((n,), dtype=np.int8), f"Z{i}"),
                ]
                nodes.append(
                    helper.make_node(
                        "DynamicQuantizeMatMul", [f"A{k}", w, f"S{i}", f"Z{i}"], [y], domain="com.microsoft"
                    )
                )
            outputs.append(helper.make_tensor_value_info(y, y_type, [m, n]))
            i += 1
    g = helper.make_graph(nodes, kind, inputs, outputs, initializer=inits)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(g, opset_imports=opsets, ir_version=8).SerializeToString(), feeds


def gop_per_s(kind: str, m: int, threads: int, seconds: float) -> float:
    """Time one layer's GEMM mix on a batch of m token rows; return 2 x multiply-adds per second, in G."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    model, feeds = _layer_graph(kind, m, np.random.default_rng(0))
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    ops_per_run = 2 * m * sum(k * n * c for k, n, c in SHAPES)
    session.run(None, feeds)  # warm-up
    runs, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        session.run(None, feeds)
        runs += 1
    return ops_per_run * runs / (time.perf_counter() - t0) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32, help="pairs per batch (m = batch x tokens rows)")
    ap.add_argument("--seconds", type=float, default=10.0, help="timed seconds per kind")
    ap.add_argument("--target", type=float, default=400.0, help="pairs/s the issue asks for")
    args = ap.parse_args()
    m = args.batch * args.tokens
    gop_pair = 2 * macs_per_token() * args.tokens / 1e9
    print(f"ORT {ort.__version__}, {args.threads} threads, m={m} rows; linear layers: {gop_pair:.3f} GOP per pair")
    print(f"target {args.target:.0f} pairs/s needs {args.target * gop_pair:.0f} GOP/s of linear layers alone")
    base = None
    print(f"{'kind':<32}{'GOP/s':>9}{'x fp32':>8}{'max pairs/s':>13}")
    for kind, label in (
        ("fp32", "fp32 MatMul"),
        ("int8", "int8 MatMulInteger (GEMM only)"),
        ("dynamic", "int8 DynamicQuantizeMatMul"),
    ):
        r = gop_per_s(kind, m, args.threads, args.seconds)
        base = base or r
        print(f"{label:<32}{r:>9.1f}{r / base:>8.2f}{r / gop_pair:>13.1f}")


if __name__ == "__main__":
    main()
