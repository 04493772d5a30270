"""Judging on GPU through `ray.data.llm`'s vLLM processor (needs `lref[serve]` and a GPU; not run in CI).

The same prompt text as every other path (`render_chat` of `judgment_messages`), one generated token with
the verbalizers as the only allowed tokens, and vLLM's processed logprobs, so the logprobs returned are
those of the verbalizers; `distribution` turns them into the same `ScoredPair` as the `hf` engine does.
Tensor and pipeline parallelism are vLLM engine arguments (`tensor_parallel_size`, `pipeline_parallel_size`).

    ds = ray.data.read_parquet("pairs/")          # query_id, query, product_id, product (a Product dict)
    judge = build_judge_processor("runs/dpo/model", concurrency=16, tensor_parallel_size=1)
    judge(ds).write_parquet("scores/")

This path streams through Ray Data's own writer; for exactly-once shards per input shard, run the hf engine
through `lref score --ray` or call `run_job` with a job whose `process` calls an OpenAI-compatible engine
pointed at `lref serve --engine vllm` (`--endpoint`).
"""

from __future__ import annotations

from lref.labels import get_scheme


def build_judge_processor(
    model: str,
    scheme: str = "esci",
    max_product_tokens: int = 256,
    concurrency: int = 1,
    batch_size: int = 64,
    tensor_parallel_size: int = 1,
    pipeline_parallel_size: int = 1,
    engine_kwargs: dict | None = None,
):
    """A `ray.data.llm` processor: pair rows in, rows with `score`, `probs` and `pred_label` out."""
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig  # lazy: vLLM and a GPU only
    from transformers import AutoTokenizer

    from lref.data import Product, render_product
    from lref.engines.base import distribution
    from lref.prompts import judgment_messages, render_chat

    sch = get_scheme(scheme)
    tok = AutoTokenizer.from_pretrained(model)
    ids = sch.token_ids(tok)
    config = vLLMEngineProcessorConfig(
        model_source=model,
        concurrency=concurrency,
        batch_size=batch_size,
        chat_template_stage=False,  # the prompt is rendered below, exactly as the hf engine renders it
        detokenize_stage=False,
        engine_kwargs={
            "enable_prefix_caching": True,
            "logprobs_mode": "processed_logprobs",
            "max_logprobs": len(ids),
            "tensor_parallel_size": tensor_parallel_size,
            "pipeline_parallel_size": pipeline_parallel_size,
            **(engine_kwargs or {}),
        },
    )

    def preprocess(row: dict) -> dict:
        product = Product(**row["product"])
        text = render_chat(tok, judgment_messages(row["query"], render_product(product, max_product_tokens, tok), sch))
        params = {"max_tokens": 1, "temperature": 0.0, "logprobs": len(ids), "allowed_token_ids": ids}
        return {**row, "prompt": text, "sampling_params": params}

    def postprocess(row: dict) -> dict:
        first = row["logprobs"][0]
        lp = [(first.get(i) or first.get(str(i)))["logprob"] for i in ids]
        pair = distribution(lp, sch)
        keep = {k: v for k, v in row.items() if k in ("query_id", "product_id", "grade", "gold_label")}
        return {**keep, "score": pair.score, "probs": pair.probs, "pred_label": pair.label}

    return build_processor(config, preprocess=preprocess, postprocess=postprocess)
