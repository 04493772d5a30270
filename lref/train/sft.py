"""Supervised fine-tuning of a relevance judge with TRL's `SFTTrainer`.

Rows are conversational prompt/completion pairs (the judgment prompt of `lref.prompts`, and the
grade's verbalizer, or a rationale ending in the answer slot, as the assistant turn), so the loss falls
on the completion only. LoRA (peft) or full fine-tuning; padding-free packing (best-fit decreasing)
when asked; checkpoints that `train_sft` resumes from after a kill; and, at the end of every epoch,
the metrics of the caller's `evaluate` function (the command layer passes the eval harness metrics on
a validation split), appended to `metrics.jsonl` beside the training losses. The stage skeleton
(loading, LoRA, checkpoints, metrics, the saved folder) is `lref.train.stage`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from lref.labels import LabelScheme
from lref.prompts import judgment_messages
from lref.train.stage import (
    Evaluate,
    LoraSpec,
    load_for_training,
    read_log,
    run_trainer,
    save_stage,
    trainer_defaults,
    write_summary,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- data


def sft_row(record: dict, scheme: LabelScheme, completion: str | None = None, tokenizer=None) -> dict:
    """One conversational prompt/completion row; the completion defaults to the gold grade's verbalizer."""
    if completion is None:
        completion = scheme.grades[scheme.index(record["label"])].verbalizer
    return {
        "prompt": judgment_messages(record["query"], record["product_text"], scheme, tokenizer),
        "completion": [{"role": "assistant", "content": completion}],
    }


def sft_dataset(records: list[dict], scheme: LabelScheme, tokenizer=None):
    import datasets

    return datasets.Dataset.from_list([sft_row(r, scheme, tokenizer=tokenizer) for r in records])


def read_records(path: str | Path) -> list[dict]:
    """Records (query, product_text, label, ...) from a JSONL file such as `lref select` writes."""
    from lref.data import read_table

    return [row for _, row in read_table(path, required=("query", "product_text", "label"))]


def read_conversations(path: str | Path) -> list[dict] | None:
    """Conversational prompt/completion rows (only those two fields), or None when the file holds records."""
    from lref.data import DataError, read_table

    rows = read_table(path)
    if not all(k in rows[0][1] for k in ("prompt", "completion")):
        return None
    out = []
    for n, row in rows:
        for key in ("prompt", "completion"):
            if not isinstance(row.get(key), list) or not row[key]:
                raise DataError("expected a non-empty list of chat messages", path, n, key)
        out.append({"prompt": row["prompt"], "completion": row["completion"]})
    return out


# ---------------------------------------------------------------------------------------------- training


def sft_config(out: str | Path, **overrides):
    """An `SFTConfig` with lref's defaults: CPU-safe precision, packing, per-step checkpoints, no hub."""
    from trl import SFTConfig

    kw = {**trainer_defaults(out), "learning_rate": 2e-4, "packing": True, "packing_strategy": "bfd"}
    kw.update({k: v for k, v in overrides.items() if v is not None})
    if not kw["packing"]:
        kw.pop("packing_strategy", None)
    return SFTConfig(**kw)


def train_sft(
    model_path: str | Path,
    train_dataset,
    out: str | Path,
    config=None,
    lora: LoraSpec | None = None,
    adapter: str | Path | None = None,
    evaluate: Evaluate | None = None,
    callbacks: Sequence = (),
) -> dict:
    """Fine-tune on prompt/completion rows and save the stage; resumes from `out/checkpoints` if present.

    `evaluate(model, tokenizer)`, when given, runs at the end of every epoch and its metrics go to
    metrics.jsonl. Returns a summary: steps, final training loss, trainable parameter count, and the
    last epoch's metrics when `evaluate` is given.
    """
    from trl import SFTTrainer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lora = lora or LoraSpec()
    config = config or sft_config(out)
    model, tok = load_for_training(model_path, adapter)
    run = run_trainer(SFTTrainer, model, tok, config, train_dataset, out, lora, evaluate, callbacks)
    model_dir = save_stage(run.trainer, out, lora.enabled)
    summary = {
        "stage": "sft",
        "steps": run.trainer.state.global_step,
        "train_loss": run.result.training_loss,
        "trainable_params": run.trainable_params,
        "resumed_from": run.resumed_from,
        "model": str(model_dir),
    }
    evals = [h["eval"] for h in read_log(out / "metrics.jsonl") if "eval" in h]
    if evals:
        summary["eval"] = evals[-1]
    return write_summary(out, summary, run.trainer)
