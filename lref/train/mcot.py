"""Multi-CoT: rationale builders (EE, RA, DR), teachers, sequential tuning and answer-slot inference.

- EE-CoT: the teacher explains the gold label.
- RA-CoT: the teacher derives the label from written rules (product relevance = core type and
  function; modifier relevance = brand, model, attributes), without seeing the gold label.
- DR-CoT: the teacher is shown a wrong decision, explains why it is wrong, and gives the gold label.

Teachers: any OpenAI-compatible chat endpoint (`OpenAITeacher`), or the offline `AttributeTeacher`,
which writes rationales from the product's fields (brand, type words, colour, size, category) and the
query. Every rationale ends in the fixed answer slot (`lref.prompts.answer_slot`); rationales whose
slot label disagrees with the gold label (or has none) are dropped and counted. Tuning runs EE → RA → DR,
each stage starting from the model of the last. At inference the model writes its rationale, the text
is cut at the slot, and the grade distribution is read there in one forward pass.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from lref.labels import LabelError, LabelScheme
from lref.prompts import ANSWER_PREFIX, COT_KINDS, answer_slot, cot_messages, render, teacher_messages
from lref.train.stage import Evaluate, LoraSpec, write_summary

log = logging.getLogger(__name__)

_STOP = set(
    "a an and the for with of to in on by or without from at as is are be this that men mens women womens kids "
    "set pack new".split()
)
_WORD = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")
_SLOT = re.compile(re.escape(ANSWER_PREFIX) + r"\s*(\S+)")


def words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


def _stem(w: str) -> str:
    return w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w


def slot_label(text: str, scheme: LabelScheme) -> str | None:
    """The label written in the last answer slot of a rationale, or None when there is none or it is unknown."""
    found = _SLOT.findall(text)
    if not found:
        return None
    try:
        return scheme.grades[scheme.index(found[-1].strip(".,;:*"))].label
    except LabelError:
        return None


def cut_at_slot(text: str) -> str:
    """The rationale before its answer slot (the whole text when the model wrote no slot)."""
    i = text.find(ANSWER_PREFIX)
    return (text if i < 0 else text[:i]).rstrip()


# ---------------------------------------------------------------------------------------------- teachers


class Teacher(Protocol):
    name: str

    def rationales(self, kind: str, items: Sequence[dict], scheme: LabelScheme) -> list[str]:
        """One rationale per item ({query, product_text, product, label, wrong_label}), ending in the slot."""


class AttributeTeacher:
    """Offline teacher: matches query terms against the product's type words, brand, colour, size and category."""

    name = "attributes"

    def __init__(self, rules: str | None = None):
        self.rules = rules

    def evidence(self, query: str, product: dict) -> dict:
        title = product.get("title", "")
        cat = " ".join(product.get("category") or [])
        brand = (product.get("brand") or "").strip()
        colour = (product.get("color") or "").strip()
        qw = words(query)
        tw = {_stem(w) for w in words(title)}
        cw = {_stem(w) for w in words(cat)}
        numbers = [w for w in qw if any(ch.isdigit() for ch in w)]
        terms = [w for w in qw if not any(ch.isdigit() for ch in w)]
        head = terms[-1] if terms else None
        matched = [w for w in qw if _stem(w) in tw or _stem(w) in cw]
        missing = [w for w in qw if w not in matched]
        return {
            "head": head,
            "type_match": head is not None and (_stem(head) in tw or _stem(head) in cw),
            "brand": brand,
            "brand_in_query": bool(brand) and brand.lower() in query.lower(),
            "colour": colour,
            "colour_in_query": bool(colour) and colour.lower() in query.lower(),
            "numbers_missing": [n for n in numbers if _stem(n) not in tw],
            "matched": matched,
            "missing": missing,
            "coverage": len(matched) / len(qw) if qw else 0.0,
            "category": cat,
        }

    def derive(self, ev: dict, scheme: LabelScheme) -> str:
        """The rule-derived grade: type and all modifiers match -> top; type only -> second; some overlap ->
        second lowest; nothing -> lowest."""
        g = scheme.grades
        if ev["type_match"] and not ev["missing"] and not ev["numbers_missing"]:
            return g[0].label
        if ev["type_match"]:
            return g[1].label
        if ev["coverage"] >= 0.3:
            return g[-2].label
        return g[-1].label

    def _facts(self, query: str, ev: dict) -> str:
        lines = [f"The query '{query}' asks for a {ev['head'] or 'product'}."]
        lines.append(
            f"Core type: '{ev['head']}' {'appears' if ev['type_match'] else 'does not appear'} in title or category"
            + (f" ({ev['category']})." if ev["category"] else ".")
        )
        if ev["brand"]:
            lines.append(
                f"Brand: {ev['brand']}, {'named in the query' if ev['brand_in_query'] else 'not named in the query'}."
            )
        if ev["colour"]:
            lines.append(
                f"Colour: {ev['colour']}, {'as asked' if ev['colour_in_query'] else 'not asked for in the query'}."
            )
        if ev["numbers_missing"]:
            lines.append(f"Size or model numbers not found in the title: {', '.join(ev['numbers_missing'])}.")
        lines.append(
            f"Matched query terms: {', '.join(ev['matched']) or 'none'}; "
            f"missing: {', '.join(ev['missing']) or 'none'}."
        )
        return " ".join(lines)

    def rationale(self, kind: str, item: dict, scheme: LabelScheme) -> str:
        ev = self.evidence(item["query"], item.get("product") or {"title": item["product_text"]})
        facts = self._facts(item["query"], ev)
        gold = item.get("label")
        if kind == "ee":
            g = scheme.grades[scheme.index(gold)]
            text = f"{facts} So the grade is {g.label}: {g.definition}"
            verb = g.verbalizer
        elif kind == "ra":
            lab = self.derive(ev, scheme)
            g = scheme.grades[scheme.index(lab)]
            rule = "rule 2" if ev["type_match"] else "rules 3-4"
            text = f"{facts} By {rule}, the grade is {g.label}."
            verb = g.verbalizer
        elif kind == "dr":
            g = scheme.grades[scheme.index(gold)]
            w = item["wrong_label"]
            direction = "too high" if scheme.grade_of(w) > g.value else "too low"
            text = f"{facts} The grade {w} is {direction}: {g.definition} The correct grade is {g.label}."
            verb = g.verbalizer
        else:
            raise ValueError(f"unknown chain-of-thought kind {kind!r}")
        return text + answer_slot(verb)

    def rationales(self, kind: str, items: Sequence[dict], scheme: LabelScheme) -> list[str]:
        return [self.rationale(kind, it, scheme) for it in items]


class OpenAITeacher:
    """Any OpenAI-compatible chat endpoint (vLLM, a hosted model, `lref serve`) as the rationale writer.

    Requests go through lref's one OpenAI client (`lref.engines.client`), with its retries and timeout;
    `client` replaces it (an `OpenAIClient`), e.g. to share one connection pool.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        max_tokens: int = 256,
        rules: str | None = None,
        client=None,
    ):
        from lref.engines.client import OpenAIClient

        self.model, self.max_tokens, self.rules = model, max_tokens, rules
        self.client = client or OpenAIClient(base_url, api_key)

    def rationales(self, kind: str, items: Sequence[dict], scheme: LabelScheme) -> list[str]:
        from tqdm.auto import tqdm

        out = []
        for it in tqdm(items, desc=f"teacher {kind}", unit="pair"):
            msgs = teacher_messages(
                it["query"], it["product_text"], scheme, kind, it.get("label"), it.get("wrong_label"), self.rules
            )
            try:
                resp = self.client.call(
                    "/v1/chat/completions",
                    lambda sdk, msgs=msgs: sdk.chat.completions.create(
                        model=self.model, messages=msgs, max_tokens=self.max_tokens, temperature=0.0
                    ),
                )
                out.append(resp.choices[0].message.content or "")
            except Exception as e:  # one failed request drops one rationale, not the job
                log.warning("teacher request failed: %s", e)
                out.append("")
        return out


# ---------------------------------------------------------------------------------------------- builders


def normalise_slot(text: str, scheme: LabelScheme) -> str | None:
    """A teacher's text rewritten to end in the fixed slot of its (last) slot label; None when it has none."""
    lab = slot_label(text, scheme)
    if lab is None:
        return None
    return cut_at_slot(text) + answer_slot(scheme.grades[scheme.index(lab)].verbalizer)


def wrong_decision(label: str, scheme: LabelScheme) -> str:
    """The wrong decision DR-CoT corrects, offline: the adjacent (most plausible) confusion of the gold label."""
    from lref.train.selection import adjacent_confusion

    return adjacent_confusion(label, scheme)


def build_rationales(
    records: list[dict],
    scheme: LabelScheme,
    kind: str,
    teacher: Teacher,
    products: dict | None = None,
    rules: str | None = None,
    tokenizer=None,
    wrong_labels: Sequence[str] | None = None,
) -> tuple[list[dict], dict]:
    """SFT rows (prompt / completion = rationale ending in the slot) of one CoT kind, and counts.

    Rationales whose slot label is missing or differs from the gold label are dropped.
    """
    if kind not in COT_KINDS:
        raise ValueError(f"unknown chain-of-thought kind {kind!r} ({COT_KINDS})")
    items = []
    for n, r in enumerate(records):
        it = {**r}
        if products is not None and r.get("product_id") in products:
            p = products[r["product_id"]]
            it["product"] = p if isinstance(p, dict) else p.to_dict()
        if kind == "dr":
            it["wrong_label"] = wrong_labels[n] if wrong_labels is not None else wrong_decision(r["label"], scheme)
        items.append(it)
    texts = teacher.rationales(kind, items, scheme)
    rows, dropped, no_slot = [], 0, 0
    for it, text in zip(items, texts, strict=True):
        fixed = normalise_slot(text, scheme)
        if fixed is None:
            no_slot += 1
            continue
        if slot_label(fixed, scheme) != scheme.grades[scheme.index(it["label"])].label:
            dropped += 1
            continue
        msgs = cot_messages(it["query"], it["product_text"], scheme, kind, it.get("wrong_label"), rules, tokenizer)
        rows.append({"prompt": msgs, "completion": [{"role": "assistant", "content": fixed}]})
    counts = {"kind": kind, "built": len(records), "kept": len(rows), "dropped_disagree": dropped}
    counts["dropped_no_slot"] = no_slot
    log.info("%s-CoT rationales: %s", kind.upper(), counts)
    return rows, counts


# ---------------------------------------------------------------------------------------------- inference


def cot_score(engine, prompts: Sequence[list[dict]], max_new_tokens: int = 96, progress: bool = False):
    """Chain-of-thought judgments: generate the rationale, cut it at the slot, read the grade distribution
    at the fixed slot in one forward pass. Returns (ScoredPair list, rationale texts)."""
    gen = engine.generate(list(prompts), max_new_tokens=max_new_tokens, progress=progress)
    rationales = [cut_at_slot(g) for g in gen]
    texts = [
        render(engine.tokenizer, p) + r + f"\n{ANSWER_PREFIX}\n" for p, r in zip(prompts, rationales, strict=True)
    ]
    return engine.score(texts, progress=progress), rationales


class CoTScorer:
    """A harness scorer reading the grade at the answer slot after the model's own rationale."""

    name = "llm-cot"

    def __init__(self, engine, max_product_tokens: int = 256, max_new_tokens: int = 96):
        self.engine, self.max_product_tokens, self.max_new_tokens = engine, max_product_tokens, max_new_tokens

    def score(self, corpus, progress: bool = True) -> list[dict]:
        from lref.data import render_product

        tok = self.engine.tokenizer
        prompts = [
            cot_messages(
                j.query, render_product(corpus.products[j.product_id], self.max_product_tokens, tok), corpus.scheme
            )
            for j in corpus.judgments
        ]
        results, rationales = cot_score(self.engine, prompts, self.max_new_tokens, progress)
        scheme = self.engine.scheme
        return [
            {"score": r.score, "probs": r.probs_by_label(scheme), "pred_label": r.label, "rationale": t}
            for r, t in zip(results, rationales, strict=True)
        ]


# ---------------------------------------------------------------------------------------------- training


def train_mcot(
    model_path: str | Path,
    records: list[dict],
    scheme: LabelScheme,
    out: str | Path,
    teacher: Teacher,
    products: dict | None = None,
    kinds: Sequence[str] = COT_KINDS,
    config_overrides: dict | None = None,
    lora: LoraSpec | None = None,
    adapter: str | Path | None = None,
    rules: str | None = None,
    evaluate: Evaluate | None = None,
) -> dict:
    """Build rationales of each kind and tune EE → RA → DR in sequence, each stage from the last one's model.

    `evaluate(model, tokenizer)`, when given, runs at the end of every epoch of every kind (see `train_sft`).
    """
    import datasets

    from lref.train.sft import sft_config, train_sft

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"stage": "mcot", "teacher": teacher.name, "kinds": {}}
    current, current_adapter = str(model_path), adapter
    for kind in kinds:
        rows, counts = build_rationales(records, scheme, kind, teacher, products, rules)
        if not rows:
            log.warning("%s-CoT: every rationale was dropped; stage skipped", kind.upper())
            summary["kinds"][kind] = {**counts, "skipped": True}
            continue
        stage_out = out / kind
        cfg = sft_config(stage_out, **(config_overrides or {}))
        s = train_sft(
            current,
            datasets.Dataset.from_list(rows),
            stage_out,
            cfg,
            lora,
            current_adapter,
            evaluate=evaluate,
        )
        summary["kinds"][kind] = {**counts, "steps": s["steps"], "train_loss": s["train_loss"]}
        current, current_adapter = s["model"], None
    summary["model"] = current
    return write_summary(out, summary)
