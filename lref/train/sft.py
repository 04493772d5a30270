"""Supervised fine-tuning of a relevance judge with TRL's `SFTTrainer`.

Rows are conversational prompt/completion pairs (the judgment prompt of `lref.prompts`, and the
grade's verbalizer, or a rationale ending in the answer slot, as the assistant turn), so the loss falls
on the completion only. LoRA (peft) or full fine-tuning; padding-free packing (best-fit decreasing)
when asked; checkpoints that `train` resumes from after a kill; and, at the end of every epoch, the
eval harness metrics (macro-F1, accuracy, over/under-grading, nDCG@10) on a validation corpus, appended
to `metrics.jsonl` beside the training losses.

Each training stage writes one folder: `model/` (a full model, the LoRA adapter merged in, which the
next stage or `lref eval --model` loads), `adapter/` (the LoRA adapter alone), `checkpoints/` and
`metrics.jsonl`. The stages (SFT, Multi-CoT, DPO) share the helpers here.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from lref.data import Corpus
from lref.labels import LabelScheme
from lref.prompts import judgment_messages

log = logging.getLogger(__name__)

EVAL_KEYS = ("macro_f1", "accuracy", "over_grading_rate", "under_grading_rate", "ndcg@10")


@dataclass
class LoraSpec:
    """LoRA settings; `enabled=False` means full fine-tuning."""

    enabled: bool = True
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] | str = field(default_factory=lambda: "all-linear")

    def peft_config(self):
        if not self.enabled:
            return None
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            task_type="CAUSAL_LM",
        )


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


def write_records(path: str | Path, rows: list[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------------------------- models


def load_for_training(model_path: str | Path, adapter: str | Path | None = None):
    """(model, tokenizer) in float32 on CPU, with a previous stage's adapter merged in; the trainer places it."""
    from lref.models import load_model

    model, tok = load_model(model_path, adapter=adapter, merge=True, device="cpu")
    model.train()
    return model, tok


def save_stage(trainer, out: Path, lora: bool) -> Path:
    """Write `out/adapter` (LoRA) and `out/model` (full weights, adapter merged) from the main process."""
    model_dir = out / "model"
    if lora:
        trainer.save_model(str(out / "adapter"))
    if not trainer.is_world_process_zero():
        return model_dir
    model = trainer.accelerator.unwrap_model(trainer.model)
    if lora:
        model = model.merge_and_unload()
    model.save_pretrained(model_dir)
    trainer.processing_class.save_pretrained(model_dir)
    log.info("stage model saved to %s", model_dir)
    return model_dir


def last_checkpoint(ckpt_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not ckpt_dir.is_dir():
        return None
    return get_last_checkpoint(str(ckpt_dir))


# ---------------------------------------------------------------------------------------------- eval


def evaluate_model(model, tokenizer, corpus: Corpus, batch_size: int = 32, max_product_tokens: int = 256) -> dict:
    """The harness metrics of a model (in memory) on a corpus, reading the answer in one forward pass."""
    from lref.engines.hf import HFEngine
    from lref.engines.judge import LLMScorer
    from lref.eval.harness import score_rows
    from lref.eval.metrics import compute_metrics

    was_training = model.training
    model.eval()
    engine = HFEngine(model, tokenizer, corpus.scheme, batch_size=batch_size)
    rows = score_rows(corpus, LLMScorer(engine, max_product_tokens), progress=False)
    if was_training:
        model.train()
    m = compute_metrics(rows, corpus.scheme)
    return {k: m[k] for k in EVAL_KEYS}


def metrics_callback(log_path: Path, eval_corpus: Corpus | None, tokenizer, batch_size: int, max_product_tokens: int):
    """A TrainerCallback that appends the trainer's logs and per-epoch harness metrics to `log_path` (JSONL)."""
    from transformers import TrainerCallback

    class HarnessMetrics(TrainerCallback):
        def _append(self, state, record: dict) -> None:
            if not state.is_world_process_zero:
                return
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with log_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"time": round(time.time(), 2), **record}) + "\n")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                self._append(state, {"step": state.global_step, "epoch": state.epoch, **logs})

        def on_epoch_end(self, args, state, control, model=None, **kwargs):
            if eval_corpus is None or model is None or not state.is_world_process_zero:
                return
            m = evaluate_model(model, tokenizer, eval_corpus, batch_size, max_product_tokens)
            log.info("epoch %.2f eval: %s", state.epoch or 0, m)
            self._append(state, {"step": state.global_step, "epoch": state.epoch, "eval": m})

    return HarnessMetrics()


# ---------------------------------------------------------------------------------------------- training


def trainer_defaults(out: str | Path) -> dict:
    """Arguments every lref training stage shares: checkpoints under `out`, CPU-safe precision, no hub."""
    import torch

    cuda = torch.cuda.is_available()
    return dict(
        output_dir=str(Path(out) / "checkpoints"),
        per_device_train_batch_size=8,
        num_train_epochs=1,
        max_length=1024,
        logging_steps=5,
        save_strategy="steps",
        save_steps=50,
        save_total_limit=2,
        report_to="none",
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        dataloader_pin_memory=cuda,
        seed=0,
    )


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
    eval_corpus: Corpus | None = None,
    eval_batch_size: int = 32,
    max_product_tokens: int = 256,
    callbacks: list | None = None,
) -> dict:
    """Fine-tune on prompt/completion rows and save the stage; resumes from `out/checkpoints` if present.

    Returns a summary: steps, final training loss, trainable parameter count, and the last epoch's
    eval metrics when an eval corpus is given.
    """
    from trl import SFTTrainer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lora = lora or LoraSpec()
    config = config or sft_config(out)
    model, tok = load_for_training(model_path, adapter)
    cb = metrics_callback(out / "metrics.jsonl", eval_corpus, tok, eval_batch_size, max_product_tokens)
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=train_dataset,
        processing_class=tok,
        peft_config=lora.peft_config(),
        callbacks=[cb, *(callbacks or [])],
    )
    resume = last_checkpoint(Path(config.output_dir))
    if resume:
        log.info("resuming from %s", resume)
    n_trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    result = trainer.train(resume_from_checkpoint=resume)
    model_dir = save_stage(trainer, out, lora.enabled)
    summary = {
        "stage": "sft",
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "trainable_params": n_trainable,
        "resumed_from": resume,
        "model": str(model_dir),
    }
    evals = [h["eval"] for h in _read_log(out / "metrics.jsonl") if "eval" in h]
    if evals:
        summary["eval"] = evals[-1]
    if trainer.is_world_process_zero():
        (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def _read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
