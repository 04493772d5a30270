"""SFT throughput: padding-free BFD packing against padded batches, same data, same model, one run.

Usage: PYTHONPATH=. python bench/bench_sft.py [--data DIR] [--model DIR] [--rows N] [--steps N]
Prints real (non-pad) training tokens per second of each mode and the ratio packed / padded.
Without --model it builds the tiny local model (hidden 256, 4 layers) from the data.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def run(model_path, records, scheme, tok, packing: bool, steps: int, batch_tokens: int, batch_size: int) -> dict:
    from trl import SFTTrainer

    from lref.models import load_model
    from lref.train.sft import sft_config, sft_dataset

    model, _ = load_model(model_path, device="cpu")
    model.train()
    with tempfile.TemporaryDirectory() as out:
        if packing:  # one packed row of `batch_tokens` tokens per step, flattened (padding-free)
            cfg = sft_config(out, max_steps=steps, per_device_train_batch_size=1, max_length=batch_tokens)
        else:  # `batch_size` rows per step, padded to the longest
            cfg = sft_config(out, max_steps=steps, per_device_train_batch_size=batch_size, packing=False)
        cfg.save_strategy, cfg.logging_steps, cfg.disable_tqdm = "no", steps, True
        trainer = SFTTrainer(
            model=model, args=cfg, train_dataset=sft_dataset(records, scheme, tok), processing_class=tok
        )
        batch = next(iter(trainer.get_train_dataloader()))
        t0 = time.perf_counter()
        trainer.train()
        elapsed = time.perf_counter() - t0
        logs = [h for h in trainer.state.log_history if "num_tokens" in h]
        n_tokens = logs[-1]["num_tokens"] if logs else float("nan")
        padded_width = batch["input_ids"].shape
    rate = n_tokens / elapsed
    return {"packing": packing, "steps": steps, "tokens": n_tokens, "seconds": elapsed, "tok_per_s": rate,
            "first_batch_shape": list(padded_width)}  # fmt: skip


def main() -> None:
    import torch

    from lref.data import load_dir, to_records
    from lref.models import init_tiny, load_tokenizer

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/esci150")
    ap.add_argument("--model")
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-product-tokens", type=int, default=256)
    args = ap.parse_args()
    torch.manual_seed(0)
    model_path = args.model
    if model_path is None:
        model_path = init_tiny(
            tempfile.mkdtemp(prefix="bench_sft_"), args.data, hidden_size=256, num_layers=4, num_heads=4
        )
    tok = load_tokenizer(model_path)
    corpus = load_dir(args.data)
    records = to_records(corpus, args.max_product_tokens, tok)
    import random

    records = random.Random(0).sample(records, min(args.rows, len(records)))
    from lref.train.sft import sft_row

    rows = [sft_row(r, corpus.scheme, tokenizer=tok) for r in records[:200]]
    texts = [tok.apply_chat_template(r["prompt"] + r["completion"], tokenize=False) for r in rows]
    lengths = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    mean_len = sum(lengths) / len(lengths)
    batch_tokens = int(args.batch_size * mean_len * 1.3)  # about the padded batch's real tokens, rounded up
    padded = run(model_path, records, corpus.scheme, tok, False, args.steps, batch_tokens, args.batch_size)
    packed = run(model_path, records, corpus.scheme, tok, True, args.steps, batch_tokens, args.batch_size)
    ratio = packed["tok_per_s"] / padded["tok_per_s"]
    print(json.dumps({"padded": padded, "packed": packed}, indent=2))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"SFT tokens/s on {device}: padded {padded['tok_per_s']:.0f}, packed (padding-free) "
          f"{packed['tok_per_s']:.0f}; ratio {ratio:.2f}x (target >= 1.5x)")  # fmt: skip


if __name__ == "__main__":
    main()
