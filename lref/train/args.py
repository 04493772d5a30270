"""The settings of one training stage (SFT, each Multi-CoT kind, DPO), as one dataclass.

The fields carry their help in `metadata`, so `lref sft|mcot|dpo` build their flags from this class (the
`HfArgumentParser` idea) and the stages take the parsed object as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lref.train.sft import LoraSpec


def _arg(help: str, default=None):
    return field(default=default, metadata={"help": help})


# StageArgs field -> the TRL config (SFTConfig / DPOConfig) argument it sets
TRL_NAMES = {
    "epochs": "num_train_epochs",
    "max_steps": "max_steps",
    "learning_rate": "learning_rate",
    "batch_size": "per_device_train_batch_size",
    "grad_accum": "gradient_accumulation_steps",
    "max_length": "max_length",
    "save_steps": "save_steps",
    "seed": "seed",
}


@dataclass(kw_only=True)
class StageArgs:
    """The model a stage starts from, LoRA or full tuning, the trainer's knobs, and the stage folder."""

    model: str = field(metadata={"help": "model folder or Hub id to start from"})
    adapter: str | None = _arg("a previous stage's LoRA adapter, merged in before training")
    lora: bool = _arg("LoRA (default) or full FT", True)
    lora_r: int = _arg("LoRA rank", 16)
    lora_alpha: int = _arg("LoRA alpha (scale = alpha / r)", 32)
    epochs: float = _arg("passes over the training rows", 1.0)
    max_steps: int = _arg("stop after this many optimizer steps (-1: run the epochs)", -1)
    learning_rate: float | None = _arg("peak learning rate (default: the stage's, 2e-4 SFT, 5e-5 DPO)")
    batch_size: int = _arg("rows per device per step", 8)
    grad_accum: int = _arg("gradient accumulation steps", 1)
    max_length: int = _arg("longest training sequence in tokens", 1024)
    packing: bool = _arg("padding-free BFD packing", True)
    save_steps: int = _arg("checkpoint every N steps (a rerun resumes from the last one)", 50)
    eval_batch_size: int = _arg("prompts per forward pass when the stage evaluates", 32)
    max_product_tokens: int = _arg("product text is cut to this many tokens in the prompt", 256)
    seed: int = _arg("training seed", 0)
    out: str = field(metadata={"help": "stage folder: model/, adapter/, checkpoints/, metrics.jsonl"})

    def lora_spec(self) -> LoraSpec:
        return LoraSpec(enabled=self.lora, r=self.lora_r, alpha=self.lora_alpha)

    def trainer_overrides(self, packing: bool = True) -> dict:
        """TRL config keywords (SFTConfig / DPOConfig) of these settings; `packing` only where TRL has it."""
        kw = {trl: getattr(self, name) for name, trl in TRL_NAMES.items()}
        if packing:
            kw["packing"] = self.packing
        return kw
