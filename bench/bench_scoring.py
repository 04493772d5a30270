"""One-pass relevance scoring vs generate-and-parse, same model and pairs, one run.

Baseline: a transformers text-generation pipeline that writes the label word (max_new_tokens=8, greedy)
and a parser that reads the first verbalizer in the output. Candidate: `HFEngine.score`, one batched
forward pass per pair with the label distribution read at the answer position.

    python bench/bench_scoring.py --data ../shared/data/esci150 [--model DIR] [--pairs 256]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/esci150")
    ap.add_argument("--model", help="model folder or Hub id (default: a tiny model built from --data)")
    ap.add_argument("--pairs", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hidden-size", type=int, default=64, help="size of the built tiny model (without --model)")
    ap.add_argument("--layers", type=int, default=2)
    args = ap.parse_args()

    import torch
    import transformers
    from transformers import pipeline

    from lref.data import load_dir, render_product
    from lref.engines.hf import HFEngine
    from lref.labels import ESCI
    from lref.models import init_tiny
    from lref.prompts import judgment_messages

    torch.set_num_threads(args.threads)
    corpus = load_dir(args.data)
    model_dir = args.model or str(
        init_tiny(
            tempfile.mkdtemp(prefix="lref-bench-"),
            args.data,
            hidden_size=args.hidden_size,
            num_layers=args.layers,
            num_heads=max(1, args.hidden_size // 64),
        )
    )
    engine = HFEngine.from_pretrained(model_dir, scheme="esci", batch_size=args.batch_size)
    js = corpus.judgments[: args.pairs]
    prompts = [
        engine.render(
            judgment_messages(j.query, render_product(corpus.products[j.product_id], 128, engine.tokenizer), ESCI)
        )
        for j in js
    ]
    engine.score(prompts[: args.batch_size])  # warm-up

    t0 = time.perf_counter()
    scored = engine.score(prompts)
    t_one = time.perf_counter() - t0

    engine.tokenizer.padding_side = "left"
    transformers.logging.set_verbosity_error()
    gen = pipeline("text-generation", model=engine.model, tokenizer=engine.tokenizer, device="cpu")
    n = len(prompts)
    print(f"model: {model_dir}  pairs: {n}  prompt tokens (mean): {sum(map(len, engine.encode(prompts))) / n:.0f}")
    print(f"one-pass scoring (batch {args.batch_size:>2})       : {n / t_one:8.1f} pairs/s  ({t_one:.2f} s)")
    for batch in (1, args.batch_size):  # the pipeline's default batch of 1, and the same batch as the engine
        kw = dict(max_new_tokens=8, do_sample=False, return_full_text=False, batch_size=batch)
        gen(prompts[: args.batch_size], **kw)  # warm-up
        t0 = time.perf_counter()
        outs = gen(prompts, **kw)
        parsed = [next((v for v in o[0]["generated_text"].split() if v in ESCI.verbalizers), None) for o in outs]
        t_gen = time.perf_counter() - t0
        agree = sum(p == s.label for p, s in zip(parsed, scored, strict=True))
        print(
            f"generate-and-parse (batch {batch:>2})     : {n / t_gen:8.1f} pairs/s  ({t_gen:.2f} s); "
            f"label parsed for {sum(p is not None for p in parsed)}/{n}, agrees with argmax for {agree}/{n}"
        )
        print(f"  ratio one-pass / generate (batch {batch}): {t_gen / t_one:.1f}x")


if __name__ == "__main__":
    main()
