"""Quality tags from product content, by rule: each dimension gets a level and the reasons for it.

- title: length, shouting (mostly capitals), keyword stuffing (a word repeated, or many near-duplicate
  words), a missing brand, a missing product-type word (a word of the leaf category name);
- description: completeness of the description and the bullet points;
- attributes: how many of brand, colour, category path and rating are filled;
- social_proof: average rating and number of ratings.

Levels follow the default taxonomy (best first); the thresholds are module constants so they are easy
to read and to change.
"""

from __future__ import annotations

import re
from collections import Counter

from lref.data import Product

TITLE_MIN, TITLE_GOOD_MAX, TITLE_MAX = 20, 150, 200  # characters
SHOUT_RATIO = 0.6  # share of words (3+ letters) in capitals
STUFF_REPEAT = 3  # a content word this many times or more
DESC_MIN_WORDS = 30
BULLETS_MIN = 3
STOP = {
    "for", "and", "the", "with", "of", "to", "in", "a", "an", "on", "or", "by", "at", "from", "set", "pack",
    "x", "&", "-", "|", "in.", "inch", "oz", "pcs", "size",
}  # fmt: skip
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]+")


def _stem(w: str) -> str:
    w = w.lower()
    for suf in ("ies", "es", "s"):
        if len(w) > 4 and w.endswith(suf):
            return w[: -len(suf)] + ("y" if suf == "ies" else "")
    return w


def _level(n_issues: int, levels: list[str]) -> str:
    return levels[min(n_issues, len(levels) - 1)]


def title_quality(p: Product) -> dict:
    t = p.title.strip()
    reasons: list[str] = []
    severe = 0
    if len(t) < TITLE_MIN:
        reasons.append(f"title too short ({len(t)} < {TITLE_MIN} characters)")
        severe += 1
    elif len(t) > TITLE_MAX:
        reasons.append(f"title too long ({len(t)} > {TITLE_MAX} characters)")
        severe += 1
    elif len(t) > TITLE_GOOD_MAX:
        reasons.append(f"title long ({len(t)} > {TITLE_GOOD_MAX} characters)")
    words = _WORD.findall(t)
    long_words = [w for w in words if len(w) >= 3]
    if long_words:
        caps = sum(w.isupper() for w in long_words) / len(long_words)
        if caps >= SHOUT_RATIO and len(long_words) >= 3:
            reasons.append(f"shouting ({caps:.0%} of words in capitals)")
            severe += 1
    content = [_stem(w) for w in words if w.lower() not in STOP]
    if content:
        word, n = Counter(content).most_common(1)[0]
        if n >= STUFF_REPEAT:
            reasons.append(f"keyword stuffing ({word!r} {n} times)")
            severe += 1
    low = t.lower()
    if not p.brand.strip():
        reasons.append("no brand given")
    elif p.brand.strip().lower() not in low and p.brand.split()[0].lower() not in low:
        reasons.append(f"brand {p.brand.strip()!r} not in title")
    if p.category:
        type_words = {_stem(w) for w in _WORD.findall(p.category[-1]) if w.lower() not in STOP}
        if type_words and not type_words & {_stem(w) for w in words}:
            reasons.append(f"no product-type word of {p.category[-1]!r} in title")
    minor = len(reasons) - severe
    n = severe * 2 + minor
    return {"level": _level(0 if n == 0 else 1 if n <= 2 else 2, ["good", "fair", "poor"]), "reasons": reasons}


def description_quality(p: Product) -> dict:
    reasons = []
    desc_words = len(p.description.split())
    bullets = [b for b in re.split(r"[\n;]", p.bullet_points) if b.strip()]
    if desc_words == 0:
        reasons.append("no description")
    elif desc_words < DESC_MIN_WORDS:
        reasons.append(f"short description ({desc_words} words)")
    if not bullets:
        reasons.append("no bullet points")
    elif len(bullets) < BULLETS_MIN:
        reasons.append(f"few bullet points ({len(bullets)})")
    if desc_words == 0 and not bullets:
        level = "missing"
    elif desc_words >= DESC_MIN_WORDS and len(bullets) >= BULLETS_MIN:
        level = "complete"
    else:
        level = "partial"
    return {"level": level, "reasons": reasons}


def attribute_quality(p: Product) -> dict:
    fields = {
        "brand": bool(p.brand.strip()),
        "colour": bool(p.color.strip()),
        "category": bool(p.category),
        "rating": p.rating is not None,
    }
    missing = [k for k, v in fields.items() if not v]
    filled = len(fields) - len(missing)
    level = "complete" if filled == len(fields) else "partial" if filled >= 2 else "sparse"
    return {"level": level, "reasons": [f"missing {m}" for m in missing], "filled": f"{filled}/{len(fields)}"}


def social_proof(p: Product) -> dict:
    r, n = p.rating, p.rating_count or 0
    if r is None or n == 0:
        return {"level": "none", "reasons": ["no ratings"]}
    reasons = [f"rating {r:.1f} from {n} ratings"]
    if r >= 4.3 and n >= 100:
        level = "strong"
    elif r >= 3.8 and n >= 10:
        level = "moderate"
    else:
        level = "weak"
        reasons.append("low rating" if r < 3.8 else "few ratings")
    return {"level": level, "reasons": reasons}


def quality_tags(p: Product) -> dict[str, dict]:
    """{dimension: {"level": ..., "reasons": [...]}} for the four default dimensions."""
    return {
        "title": title_quality(p),
        "description": description_quality(p),
        "attributes": attribute_quality(p),
        "social_proof": social_proof(p),
    }
