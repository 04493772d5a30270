"""DPO de-biasing: mine a judge's over-graded answers and train TRL's `DPOTrainer` against them.

After SFT most errors of a relevance judge are over-grades (an irrelevant product called relevant).
The miner reads the judge's ranked label distribution on training pairs: a pair is mined when a grade
above the gold grade is ranked above the gold label (mode "rank"), or only when the top label itself
is an over-grade (mode "top"). The pair becomes prompt / chosen = the gold verbalizer / rejected = the
highest-ranked over-grade. The caller's `evaluate` function (the command layer passes the eval
harness metrics, with the over- and under-grading rates, on a validation split) is measured before and
after training. The stage skeleton is `lref.train.stage`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from lref.labels import LabelScheme
from lref.prompts import judgment_messages
from lref.train.selection import score_probs
from lref.train.stage import (
    Evaluate,
    LoraSpec,
    load_for_training,
    run_trainer,
    save_stage,
    trainer_defaults,
    write_summary,
)

log = logging.getLogger(__name__)

LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "apo_zero",
    "apo_down",
    "discopop",
    "sigmoid_norm",
)


def mine_overgraded(
    probs: np.ndarray, gold: list[str], scheme: LabelScheme, mode: str = "rank", min_prob: float = 0.0
) -> list[dict]:
    """Over-graded answers from label distributions (rows in scheme order, highest grade first).

    Returns one dict per mined row: {index, chosen, rejected, p_rejected, p_gold, rank_of_gold}.
    `mode="top"` mines only rows whose argmax is above gold; `mode="rank"` mines every row in which some
    higher grade outranks the gold label (the rejected answer is the most probable such grade).
    `min_prob` skips over-grades the model gives less probability than that.
    """
    if mode not in ("rank", "top"):
        raise ValueError(f"unknown mining mode {mode!r} (rank or top)")
    probs = np.asarray(probs, dtype=np.float64)
    out = []
    for i, (p, g) in enumerate(zip(probs, gold, strict=True)):
        gi = scheme.index(g)
        order = [int(j) for j in np.argsort(-p, kind="stable")]
        rank_gold = order.index(gi)
        above = [j for j in order[:rank_gold] if scheme.grades[j].value > scheme.grades[gi].value]
        if mode == "top":
            above = above[:1] if order[0] in above else []
        if not above or p[above[0]] < min_prob:
            continue
        j = above[0]
        out.append(
            {
                "index": i,
                "chosen": scheme.grades[gi].label,
                "rejected": scheme.grades[j].label,
                "p_rejected": float(p[j]),
                "p_gold": float(p[gi]),
                "rank_of_gold": rank_gold,
            }
        )
    return out


def dpo_rows(records: list[dict], mined: list[dict], scheme: LabelScheme, tokenizer=None) -> list[dict]:
    """Conversational prompt / chosen / rejected rows from mined over-grades."""
    rows = []
    for m in mined:
        r = records[m["index"]]
        verb = {g.label: g.verbalizer for g in scheme.grades}
        rows.append(
            {
                "prompt": judgment_messages(r["query"], r["product_text"], scheme, tokenizer),
                "chosen": [{"role": "assistant", "content": verb[m["chosen"]]}],
                "rejected": [{"role": "assistant", "content": verb[m["rejected"]]}],
            }
        )
    return rows


def dpo_config(out: str | Path, **overrides):
    from trl import DPOConfig

    kw = {**trainer_defaults(out), "learning_rate": 5e-5, "beta": 0.1, "loss_type": ["sigmoid"]}
    kw.update({k: v for k, v in overrides.items() if v is not None})
    bad = [t for t in kw["loss_type"] if t not in LOSS_TYPES and t != "sft"]
    if bad:
        raise ValueError(f"unknown DPO loss type(s) {bad}; TRL offers {list(LOSS_TYPES)} (and sft)")
    return DPOConfig(**kw)


def train_dpo(
    model_path: str | Path,
    records: list[dict],
    scheme: LabelScheme,
    out: str | Path,
    config=None,
    lora: LoraSpec | None = None,
    adapter: str | Path | None = None,
    evaluate: Evaluate | None = None,
    mode: str = "rank",
    min_prob: float = 0.0,
    max_pairs: int | None = None,
    batch_size: int = 32,
) -> dict:
    """Mine over-grades of the model on `records` (scored `batch_size` at a time), train DPO on them, and
    report `evaluate(model, tokenizer)` before and after as `before` / `after` when it is given."""
    import datasets
    from trl import DPOTrainer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lora = lora or LoraSpec()
    config = config or dpo_config(out)
    model, tok = load_for_training(model_path, adapter)
    summary: dict = {"stage": "dpo", "loss_type": list(config.loss_type), "beta": config.beta, "mode": mode}
    if evaluate is not None:
        summary["before"] = evaluate(model, tok)
    probs = score_probs((model, tok), records, scheme, batch_size)
    mined = mine_overgraded(probs, [r["label"] for r in records], scheme, mode, min_prob)
    mined.sort(key=lambda m: -m["p_rejected"])
    if max_pairs:
        mined = mined[:max_pairs]
    summary["pool"] = len(records)
    summary["pairs"] = len(mined)
    with (out / "pairs.jsonl").open("w", encoding="utf-8") as f:
        for m in mined:
            r = records[m["index"]]
            f.write(json.dumps({"query_id": r.get("query_id"), "product_id": r.get("product_id"), **m}) + "\n")
    if not mined:  # nothing to de-bias: the stage passes the model through unchanged, and says so
        log.warning("no over-graded answers to learn from: the model never ranks a grade above gold")
        model.save_pretrained(out / "model")
        tok.save_pretrained(out / "model")
        summary.update(steps=0, model=str(out / "model"), after=summary.get("before"))
        return write_summary(out, summary)
    train = datasets.Dataset.from_list(dpo_rows(records, mined, scheme, tok))
    # losses only: `evaluate` runs before and after training instead of at each epoch
    run = run_trainer(DPOTrainer, model, tok, config, train, out, lora)
    trainer = run.trainer
    summary.update(steps=trainer.state.global_step, train_loss=run.result.training_loss, resumed_from=run.resumed_from)
    if evaluate is not None and trainer.is_world_process_zero():
        summary["after"] = evaluate(trainer.accelerator.unwrap_model(trainer.model), tok)
    summary["model"] = str(save_stage(trainer, out, lora.enabled))
    return write_summary(out, summary, trainer)
