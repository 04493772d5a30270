"""The skeleton every training stage shares (SFT, the Multi-CoT steps, DPO, the selection judges).

A stage loads its start model for training (a previous stage's adapter merged in), builds a TRL
trainer with LoRA (or full fine-tuning) and lref's trainer defaults, resumes from the last checkpoint
under `out/checkpoints` after a kill, appends the trainer's logs to `out/metrics.jsonl` (and, when the
caller passes an `evaluate` function, its metrics at the end of every epoch), and saves one folder:
`model/` (full weights, the LoRA adapter merged in, which the next stage or `lref eval --model`
loads), `adapter/` (the LoRA adapter alone), `checkpoints/`, `metrics.jsonl` and `summary.json`.

Stages never import the eval harness: what "evaluate" means is the caller's choice.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# (model, tokenizer) -> metrics: the model in memory, e.g. the harness metrics on a validation split
Evaluate = Callable[[Any, Any], dict]


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


def load_for_training(model_path: str | Path, adapter: str | Path | None = None):
    """(model, tokenizer) in float32 on CPU, with a previous stage's adapter merged in; the trainer places it."""
    from lref.models import load_model

    model, tok = load_model(model_path, adapter=adapter, merge=True, device="cpu")
    model.train()
    return model, tok


def last_checkpoint(ckpt_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not ckpt_dir.is_dir():
        return None
    return get_last_checkpoint(str(ckpt_dir))


def metrics_callback(log_path: Path, tokenizer=None, evaluate: Evaluate | None = None):
    """A TrainerCallback that appends the trainer's logs, and `evaluate(model, tokenizer)` at each epoch end,
    to `log_path` (JSONL), from the main process."""
    from transformers import TrainerCallback

    class StageMetrics(TrainerCallback):
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
            if evaluate is None or model is None or not state.is_world_process_zero:
                return
            m = evaluate(model, tokenizer)
            log.info("epoch %.2f eval: %s", state.epoch or 0, m)
            self._append(state, {"step": state.global_step, "epoch": state.epoch, "eval": m})

    return StageMetrics()


def read_log(path: Path) -> list[dict]:
    """The records of a stage's metrics.jsonl (none when it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass
class StageRun:
    """A finished `run_trainer`: the trainer, its train() result, the checkpoint resumed from and the
    count of trainable parameters."""

    trainer: Any
    result: Any
    resumed_from: str | None
    trainable_params: int


def run_trainer(
    trainer_cls,
    model,
    tokenizer,
    config,
    train_dataset,
    out: Path,
    lora: LoraSpec,
    evaluate: Evaluate | None = None,
    callbacks: Sequence = (),
) -> StageRun:
    """Build `trainer_cls` (a TRL trainer) with LoRA and the metrics callback, resume from the last
    checkpoint under `config.output_dir` when there is one, and train."""
    cb = metrics_callback(out / "metrics.jsonl", tokenizer, evaluate)
    trainer = trainer_cls(
        model=model,
        args=config,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=lora.peft_config(),
        callbacks=[cb, *callbacks],
    )
    resume = last_checkpoint(Path(config.output_dir))
    if resume:
        log.info("resuming from %s", resume)
    n_trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    result = trainer.train(resume_from_checkpoint=resume)
    return StageRun(trainer, result, resume, n_trainable)


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


def write_summary(out: Path, summary: dict, trainer=None) -> dict:
    """Write `out/summary.json` (from the main process only, when a trainer says which that is)."""
    if trainer is None or trainer.is_world_process_zero():
        (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary
