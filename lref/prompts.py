"""Prompt builders for relevance judgments.

Static text (instruction, label definitions, answer format) comes first and the query-product pair
comes last, so a serving engine can reuse the cached prefix across pairs. Query and product text are
untrusted: special-token markers are stripped from them before they reach a chat template.
"""

from __future__ import annotations

import re

from lref.labels import LabelScheme

INSTRUCTION = (
    "You are an e-commerce search relevance judge. Given a shopper's search query and a product, "
    "decide how relevant the product is to the query. Judge the core product type and function first, "
    "then the modifiers the query names: brand, model, size, colour and other attributes."
)

# Markers of common chat templates and special tokens: <|im_start|>, <|endoftext|>, <s>, [INST], <<SYS>> ...
_GENERIC_SPECIAL = re.compile(r"<\|[^<>|]{0,64}\|>|</?s>|\[/?INST\]|<</?SYS>>|<unk>|<pad>|<mask>|<bos>|<eos>")


def sanitize(text: str, tokenizer=None) -> str:
    """Remove special-token strings from untrusted text, so it cannot open or close chat turns.

    Removal repeats until nothing changes, so nested fragments cannot reassemble a marker.
    """
    specials: list[str] = []
    if tokenizer is not None:
        specials = [t for t in getattr(tokenizer, "all_special_tokens", []) if t]
        added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        specials += [t.content for t in added.values() if getattr(t, "special", False) and t.content]
        specials = sorted(set(specials), key=len, reverse=True)
    prev = None
    while prev != text:
        prev = text
        for tok in specials:
            text = text.replace(tok, "")
        text = _GENERIC_SPECIAL.sub("", text)
    return text


def system_text(scheme: LabelScheme) -> str:
    defs = "\n".join(f"- {g.verbalizer}: {g.definition}" for g in scheme.grades)
    choices = ", ".join(scheme.verbalizers)
    return f"{INSTRUCTION}\n\nGrades:\n{defs}\n\nAnswer with exactly one of: {choices}."


def user_text(query: str, product_text: str, tokenizer=None) -> str:
    return f"Query: {sanitize(query, tokenizer)}\n\nProduct:\n{sanitize(product_text, tokenizer)}"


def judgment_messages(query: str, product_text: str, scheme: LabelScheme, tokenizer=None) -> list[dict]:
    """Chat messages of the direct-judgment prompt; the answer is the next assistant token."""
    return [
        {"role": "system", "content": system_text(scheme)},
        {"role": "user", "content": user_text(query, product_text, tokenizer)},
    ]


def render(tokenizer, messages: list[dict]) -> str:
    """Prompt text up to the assistant's first answer token, with the model's chat template.

    Tokenizers without a chat template get a plain, equally ordered layout.
    """
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    body = "\n\n".join(m["content"] for m in messages)
    return f"{body}\n\nAnswer: "


def judgment_prompt(tokenizer, query: str, product_text: str, scheme: LabelScheme) -> str:
    return render(tokenizer, judgment_messages(query, product_text, scheme, tokenizer))


def render_chat(tokenizer, messages: list[dict]) -> str:
    """Chat messages to prompt text as the `hf` engine renders them: user text sanitised, then `render`.

    The embedded server and the `openai` engine use this too, so every path sends the same text.
    """
    msgs = [m if m["role"] != "user" else {**m, "content": sanitize(m["content"], tokenizer)} for m in messages]
    return render(tokenizer, msgs)


# ---------------------------------------------------------------------------------------------- chain of thought

ANSWER_PREFIX = "Answer:"

DEFAULT_RULES = """Relevance rules (derive the grade step by step):
1. Product relevance: find the core product type and function the query asks for. If the product is not
   that type and does not serve that function, it is not Exact or Substitute.
2. Modifier relevance: check the modifiers the query names: brand, model, size, colour, material and
   other attributes. Every modifier matching means Exact; a core-type match with a modifier missing or
   different means Substitute.
3. A product of another type that is used with what the query asks for (an accessory, a part, a refill)
   is a Complement.
4. A product that matches neither the core type nor a use with it is Irrelevant."""

COT_KINDS = ("ee", "ra", "dr")


def answer_slot(verbalizer: str) -> str:
    """The fixed ending of every chain-of-thought answer: the grade alone on the line after `Answer:`.

    The verbalizer follows a line break, exactly as it follows the assistant header in the direct prompt,
    so it is the same single token, and its distribution is read at this slot in one forward pass.
    """
    return f"\n{ANSWER_PREFIX}\n{verbalizer}"


def cot_system_text(scheme: LabelScheme, kind: str = "ee", rules: str | None = None) -> str:
    """Instructions for a chain-of-thought judgment; RA-CoT adds the written rules."""
    if kind not in COT_KINDS:
        raise ValueError(f"unknown chain-of-thought kind {kind!r} ({COT_KINDS})")
    defs = "\n".join(f"- {g.verbalizer}: {g.definition}" for g in scheme.grades)
    extra = f"\n\n{rules or DEFAULT_RULES}" if kind == "ra" else ""
    return (
        f"{INSTRUCTION}\n\nGrades:\n{defs}{extra}\n\nReason briefly about the product type and the modifiers, "
        f"then end with a line '{ANSWER_PREFIX}' followed by exactly one of: {', '.join(scheme.verbalizers)}."
    )


def cot_messages(
    query: str,
    product_text: str,
    scheme: LabelScheme,
    kind: str = "ee",
    wrong_label: str | None = None,
    rules: str | None = None,
    tokenizer=None,
) -> list[dict]:
    """Chat messages of a chain-of-thought judgment; DR-CoT shows the wrong decision to correct."""
    user = user_text(query, product_text, tokenizer)
    if kind == "dr":
        if wrong_label is None:
            raise ValueError("DR-CoT needs the wrong decision to correct")
        user += (
            f"\n\nA judge graded this pair {wrong_label}. Explain whether that is wrong and give the correct grade."
        )
    return [{"role": "system", "content": cot_system_text(scheme, kind, rules)}, {"role": "user", "content": user}]


def teacher_messages(
    query: str,
    product_text: str,
    scheme: LabelScheme,
    kind: str,
    gold_label: str | None = None,
    wrong_label: str | None = None,
    rules: str | None = None,
) -> list[dict]:
    """What a teacher model is asked for each kind: EE explains the gold label, RA derives the label from the
    rules (no gold shown), DR explains why `wrong_label` is wrong and gives the gold label."""
    msgs = cot_messages(query, product_text, scheme, kind, wrong_label, rules)
    if kind == "ee":
        msgs[-1]["content"] += f"\n\nThe correct grade is {gold_label}. Explain why, then give it."
    elif kind == "dr":
        msgs[-1]["content"] += f" The correct grade is {gold_label}."
    return msgs
