"""The settings of one training stage (SFT, each Multi-CoT kind, DPO), as one dataclass, and the stages run from it.

The fields carry their help in `metadata`, so `lref sft|mcot|dpo` build their flags from these classes (the
`HfArgumentParser` idea), and `run_sft` / `run_mcot` / `run_dpo` take the parsed object as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lref.labels import LabelScheme
from lref.train.stage import Evaluate, LoraSpec


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


@dataclass(kw_only=True)
class DpoStageArgs(StageArgs):
    """A DPO stage: which over-grades to mine, and TRL's DPO loss."""

    loss_type: list[str] | None = field(
        default=None,
        metadata={
            "help": "TRL DPO loss type(s), repeatable: sigmoid (default), ipo, robust, hinge, ...",
            "action": "append",
        },
    )
    beta: float = _arg("DPO temperature: how far the policy may move from the reference", 0.1)
    mine: Literal["rank", "top"] = _arg("which over-grades to mine", "rank")
    min_prob: float = _arg("mine only over-grades the model gives at least this probability", 0.0)
    max_pairs: int | None = _arg("keep the N most confident over-grades")


def run_sft(args: StageArgs, dataset, evaluate: Evaluate | None = None) -> dict:
    """`train_sft` with these settings (the stage of `lref sft`); `evaluate(model, tokenizer)` runs each epoch."""
    from lref.train.sft import sft_config, train_sft

    config = sft_config(args.out, **args.trainer_overrides())
    return train_sft(args.model, dataset, args.out, config, args.lora_spec(), args.adapter, evaluate=evaluate)


def run_mcot(args: StageArgs, records: list[dict], scheme: LabelScheme, teacher, **kw) -> dict:
    """`train_mcot` with these settings; `kw`: products, kinds, rules, evaluate."""
    from lref.train.mcot import train_mcot

    return train_mcot(
        args.model,
        records,
        scheme,
        args.out,
        teacher,
        config_overrides=args.trainer_overrides(),
        lora=args.lora_spec(),
        adapter=args.adapter,
        **kw,
    )


def run_dpo(args: DpoStageArgs, records: list[dict], scheme: LabelScheme, evaluate: Evaluate | None = None) -> dict:
    """`train_dpo` with these settings (the stage of `lref dpo`); mining scores in batches of --eval-batch-size."""
    from lref.train.dpo import dpo_config, train_dpo

    trl = {**args.trainer_overrides(packing=False), "beta": args.beta, "loss_type": args.loss_type or ["sigmoid"]}
    return train_dpo(
        args.model,
        records,
        scheme,
        args.out,
        dpo_config(args.out, **trl),
        args.lora_spec(),
        args.adapter,
        evaluate=evaluate,
        mode=args.mine,
        min_prob=args.min_prob,
        max_pairs=args.max_pairs,
        batch_size=args.eval_batch_size,
    )
