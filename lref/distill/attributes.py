"""LTR features for what ESCI grades depend on: brand, colour, quantities, negations, accessories, category.

ESCI's Exact / Substitute / Complement / Irrelevant differ in the product type, the brand, the attributes
(colour, size, count) and in whether the product is the thing asked for or an accessory of it. The features
here compare each of these between the query and the product text. They are grouped (`FEATURE_GROUPS`), so
`lref distill ltr --drop-feature-groups G` can switch a group off. "Not applicable" is NaN (for example colour
features when the query names no colour), which LightGBM treats as missing.

Catalogue-level inputs (the brand vocabulary, each query's BM25 top products for category agreement) live in
`AttributeContext`, built once per feature matrix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from lref.data import Product

NAN = float("nan")
FEATURE_GROUPS: dict[str, list[str]] = {
    "brand": ["brand_in_query", "query_brand_contradicted"],
    "colour": ["colour_match", "colour_contradicted"],
    "units": ["units_matched", "units_contradicted", "numbers_in_title"],
    "negation": ["negated_in_title", "negated_in_text", "negation_echoed"],
    "accessory": ["accessory_words", "compat_cue", "query_after_for"],
    "category": ["category_agreement", "root_agreement"],
}
GROUP_NAMES = list(FEATURE_GROUPS)
CATEGORY_TOP_K = 20  # BM25 top products that stand for the query's category

_TOKEN = re.compile(r"[a-z0-9]+(?:[.'][a-z0-9]+)*")
_GENERIC_BRANDS = {"generic", "unknown", "unbranded", "na", "n a", "none", "no brand", "amazon basics", "various"}
_STOP = {"a", "an", "and", "the", "for", "of", "with", "to", "in", "on", "by", "or", "w", "de", "la", "el", "y"}
_NOT_NEGATED = {"your", "my", "our", "their", "his", "her", "it", "included", "enough", "all", "any", "more", "so"}
COMMON_BRAND_TITLES = 60  # a one-word brand found in more titles of other brands than this is a common word

COLOURS = {
    "black", "white", "red", "blue", "green", "yellow", "pink", "purple", "orange", "brown", "grey", "silver",
    "gold", "beige", "tan", "navy", "ivory", "cream", "khaki", "teal", "turquoise", "maroon", "burgundy",
    "multicolor", "clear", "rose", "bronze", "copper", "charcoal", "olive", "mint", "coral", "lavender", "nude",
    "aqua", "magenta", "violet", "camel", "taupe", "indigo", "fuchsia", "lilac", "mauve", "champagne",
}  # fmt: skip
_COLOUR_ALIAS = {"gray": "grey", "multicolour": "multicolor", "multi": "multicolor", "golden": "gold"}

# unit word -> (dimension, factor to the dimension's base unit)
UNITS: dict[str, tuple[str, float]] = {
    **dict.fromkeys(["mm", "millimeter", "millimeters"], ("length", 0.001)),
    **dict.fromkeys(["cm", "centimeter", "centimeters"], ("length", 0.01)),
    **dict.fromkeys(["m", "meter", "meters", "metre", "metres"], ("length", 1.0)),
    **dict.fromkeys(["in", "inch", "inches", '"', "''"], ("length", 0.0254)),
    **dict.fromkeys(["ft", "foot", "feet", "'"], ("length", 0.3048)),
    **dict.fromkeys(["yd", "yard", "yards"], ("length", 0.9144)),
    **dict.fromkeys(["mg", "milligram", "milligrams"], ("mass", 0.001)),
    **dict.fromkeys(["g", "gram", "grams", "gr"], ("mass", 1.0)),
    **dict.fromkeys(["kg", "kilogram", "kilograms"], ("mass", 1000.0)),
    **dict.fromkeys(["lb", "lbs", "pound", "pounds"], ("mass", 453.592)),
    **dict.fromkeys(["oz", "ounce", "ounces"], ("oz", 1.0)),  # weight or fluid: compared only with oz
    **dict.fromkeys(["floz", "fl.oz"], ("volume", 29.5735)),
    **dict.fromkeys(["ml", "milliliter", "milliliters", "millilitre"], ("volume", 1.0)),
    **dict.fromkeys(["l", "liter", "liters", "litre", "litres"], ("volume", 1000.0)),
    **dict.fromkeys(["gal", "gallon", "gallons"], ("volume", 3785.41)),
    **dict.fromkeys(["qt", "quart", "quarts"], ("volume", 946.353)),
    **dict.fromkeys(["pint", "pints", "pt"], ("volume", 473.176)),
    **dict.fromkeys(["kb"], ("data", 1e-6)),
    **dict.fromkeys(["mb"], ("data", 1e-3)),
    **dict.fromkeys(["gb"], ("data", 1.0)),
    **dict.fromkeys(["tb"], ("data", 1000.0)),
    **dict.fromkeys(["pack", "packs", "pk", "count", "ct", "pcs", "pc", "piece", "pieces", "pairs"], ("count", 1.0)),
    **dict.fromkeys(["w", "watt", "watts"], ("power", 1.0)),
    **dict.fromkeys(["v", "volt", "volts"], ("voltage", 1.0)),
    **dict.fromkeys(["mah"], ("charge", 1.0)),
}
_NUM = r"(\d+(?:\.\d+)?(?:\s*/\s*\d+)?|\d*\.\d+)"
_UNIT_WORDS = "|".join(sorted((re.escape(u) for u in UNITS), key=len, reverse=True))
_QUANTITY = re.compile(rf"(?<![a-z0-9.]){_NUM}\s*-?\s*(fl\.?\s*oz|{_UNIT_WORDS})(?![a-z0-9])")
_COUNT_BEFORE = re.compile(rf"\b(?:pack|set|box|case|bag) of {_NUM}\b")
_BARE_NUMBER = re.compile(r"(?<![a-z0-9.])(\d+(?:\.\d+)?)(?![a-z0-9.])")
REL_TOL = 0.03  # quantities within 3% match (1 oz vs 29.57 ml, rounding in titles)

NEGATION_CUES = ("without", "not", "no", "non", "free of", "minus")
_NEGATION = re.compile(r"\b(?:without|not|no|non|free of|minus)[\s-]+((?:[a-z0-9]+\s*){1,2})")
_FREE = re.compile(r"\b([a-z]+)[\s-](?:free|less)\b")
ACCESSORY_WORDS = {
    "case", "cover", "charger", "cable", "adapter", "replacement", "compatible", "holder", "mount", "stand",
    "strap", "band", "skin", "protector", "refill", "part", "parts", "accessory", "accessories", "sleeve",
    "battery", "batteries", "remote", "cord", "tip", "tips", "pad", "pads", "filter", "cartridge", "insert",
    "kit", "attachment", "clip", "decal", "sticker", "organizer", "bag", "pouch", "lid", "blade", "bit", "bits",
}  # fmt: skip
_COMPAT = re.compile(r"\b(?:compatible with|for use with|works with|designed for|replacement for|fits|fit for|for)\b")
_COMPAT_STRONG = re.compile(r"\b(?:compatible with|for use with|works with|replacement|fits)\b")


def tokens(text: str) -> list[str]:
    """Lower-case word tokens with a crude plural strip (`lids` -> `lid`, not `glass` or `bus`)."""
    out = []
    for w in _TOKEN.findall(text.lower().replace("’", "'")):
        if len(w) > 4 and w.endswith("ies"):
            w = w[:-3] + "y"
        elif len(w) > 4 and w.endswith(("sses", "xes", "ches", "shes")):
            w = w[:-2]
        elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us")):
            w = w[:-1]
        out.append(w)
    return out


def content(text: str) -> list[str]:
    return [w for w in tokens(text) if w not in _STOP]


def contains(seq: Sequence[str], sub: Sequence[str]) -> bool:
    """Whether `sub` occurs as a contiguous run of `seq`."""
    n = len(sub)
    return n > 0 and any(list(seq[i : i + n]) == list(sub) for i in range(len(seq) - n + 1))


# ---------------------------------------------------------------------------------------------- brand


def brand_key(brand: str) -> tuple[str, ...]:
    """A brand as a token tuple; empty for missing or generic brands."""
    t = tuple(tokens(brand))
    return () if not t or " ".join(t) in _GENERIC_BRANDS else t


def query_brands(query: str, vocabulary: set[tuple[str, ...]]) -> set[tuple[str, ...]]:
    """Catalogue brands named in the query (longest first: "under armour" hides "armour")."""
    q = tokens(query)
    found = sorted((b for b in vocabulary if contains(q, b)), key=len, reverse=True)
    out: list[tuple[str, ...]] = []
    for b in found:
        if not any(contains(o, b) for o in out):
            out.append(b)
    return set(out)


def brand_features(query: str, product: Product, named: set[tuple[str, ...]]) -> dict[str, float]:
    """brand_in_query: the product's brand is named in the query (NaN: no brand);
    query_brand_contradicted: the query names a catalogue brand (`named`, from `query_brands`) and the product
    has another (NaN: none named)."""
    key = brand_key(product.brand)
    in_query = NAN if not key else float(contains(tokens(query), key))
    if not named:
        contradicted = NAN
    else:
        text = tokens(f"{product.brand} {product.title}")
        contradicted = float(not any(contains(text, b) for b in named))
    return {"brand_in_query": in_query, "query_brand_contradicted": contradicted}


# ---------------------------------------------------------------------------------------------- colour


def colours(text: str) -> set[str]:
    words = [_COLOUR_ALIAS.get(w, w) for w in re.findall(r"[a-z]+", text.lower())]
    return {w for w in words if w in COLOURS}


def colour_features(query: str, product: Product) -> dict[str, float]:
    """colour_match: share of the query's colours in the product's colour field or title;
    colour_contradicted: the product states colours and none is the query's. NaN when the query names none."""
    qc = colours(query)
    if not qc:
        return {"colour_match": NAN, "colour_contradicted": NAN}
    stated = colours(product.color or "") | colours(product.title)
    match = len(qc & stated) / len(qc)
    return {"colour_match": match, "colour_contradicted": NAN if not stated else float(not (qc & stated))}


# ---------------------------------------------------------------------------------------------- units


def _number(text: str) -> float:
    text = text.replace(" ", "")
    return float(Fraction(text)) if "/" in text and not text.startswith("/") else float(text)


def quantities(text: str) -> list[tuple[str, float]]:
    """(dimension, value in the base unit) for each number with a unit: `5m`, `200 mg`, `1/2 inch`, `6-pack`,
    `12 fl oz`, `pack of 4`."""
    t = text.lower().replace("”", '"').replace("″", '"')
    out = []
    for num, unit in _QUANTITY.findall(t):
        unit = re.sub(r"\s+", "", unit)
        dim, factor = UNITS["floz" if unit.startswith("fl") else unit]
        try:
            out.append((dim, _number(num) * factor))
        except (ValueError, ZeroDivisionError):
            continue
    for num in _COUNT_BEFORE.findall(t):
        out.append(("count", _number(num)))
    return out


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= REL_TOL * max(abs(a), abs(b), 1e-9)


def unit_features(query: str, product: Product) -> dict[str, float]:
    """units_matched / units_contradicted: shares of the query's quantities that the product's title or bullets
    state with the same value / that the title states only with other values of that dimension (NaN: none in
    the query); numbers_in_title: share of the query's bare numbers ("charge 3", "airpods 2") in the title."""
    qq = quantities(query)
    out = {"units_matched": NAN, "units_contradicted": NAN}
    if qq:
        title_q = quantities(product.title)
        all_q = title_q + quantities(product.bullet_points[:2000])
        matched = contra = 0
        for dim, v in qq:
            if any(d == dim and _close(v, w) for d, w in all_q):
                matched += 1
            elif any(d == dim for d, _ in title_q):
                contra += 1
        out = {"units_matched": matched / len(qq), "units_contradicted": contra / len(qq)}
    with_units = {m.group(1) for m in _QUANTITY.finditer(query.lower())}
    bare = [n for n in _BARE_NUMBER.findall(query.lower()) if n not in with_units]
    if bare:
        title_numbers = set(_BARE_NUMBER.findall(product.title.lower())) | {
            m.group(1) for m in _QUANTITY.finditer(product.title.lower())
        }
        out["numbers_in_title"] = sum(n in title_numbers for n in bare) / len(bare)
    else:
        out["numbers_in_title"] = NAN
    return out


# ---------------------------------------------------------------------------------------------- negation


def negated_terms(query: str) -> list[str]:
    """The content word right after each negation cue ("without lids" -> "lid"; "non-slip" -> "slip";
    "sugar free" -> "sugar")."""
    q = query.lower().replace("’", "'")
    out = []
    for m in _NEGATION.finditer(q):
        words = [w for w in content(m.group(1)) if w not in _NOT_NEGATED]
        if words:
            out.append(words[0])
    out += [w for w in (content(m.group(1)) for m in _FREE.finditer(q)) for w in w[:1]]
    return out


def _echoed(term: str, text: str) -> bool:
    """The product states the same negation: "without lid", "no lid", "lid-free", "lidless"."""
    t = tokens(text)
    for i, w in enumerate(t):
        if w in ("without", "no", "non", "not") and term in t[i + 1 : i + 4]:
            return True
        if w == term and i + 1 < len(t) and t[i + 1] in ("free", "less"):
            return True
    return f"{term}less" in t or f"{term}-free" in text.lower()


def negation_features(query: str, product: Product) -> dict[str, float]:
    """For queries with a negation (NaN otherwise): share of negated terms in the title / in the whole text,
    and whether the product itself says it lacks them (negation_echoed)."""
    neg = negated_terms(query)
    if not neg:
        return {"negated_in_title": NAN, "negated_in_text": NAN, "negation_echoed": NAN}
    title = set(tokens(product.title))
    full = f"{product.title} {product.bullet_points} {product.description}"
    text = set(tokens(full))
    return {
        "negated_in_title": sum(t in title for t in neg) / len(neg),
        "negated_in_text": sum(t in text for t in neg) / len(neg),
        "negation_echoed": sum(_echoed(t, full) for t in neg) / len(neg),
    }


# ---------------------------------------------------------------------------------------------- accessory


def accessory_features(query: str, product: Product) -> dict[str, float]:
    """accessory_words: accessory words in the title that the query does not have ("case" for "airpods 2");
    compat_cue: the title says "compatible with", "replacement", "fits", "works with";
    query_after_for: share of the query's words found in the title only after its first "for"/"compatible
    with" (the query names what the product is *for*, not the product; NaN without such a cue)."""
    q = set(content(query))
    title = product.title.lower()
    tw = tokens(title)
    acc = {w for w in tw if w in ACCESSORY_WORDS} - q
    m = _COMPAT.search(title)
    after = NAN
    if m and q:
        head, tail = set(tokens(title[: m.start()])), set(tokens(title[m.end() :]))
        found = [w for w in q if w in head or w in tail]
        after = sum(w in tail and w not in head for w in found) / len(found) if found else NAN
    return {
        "accessory_words": float(len(acc)),
        "compat_cue": float(bool(_COMPAT_STRONG.search(title))),
        "query_after_for": after,
    }


# ---------------------------------------------------------------------------------------------- category


def topic_keys(product: Product, tags: Mapping[str, dict] | None) -> set[str]:
    """What a product is about: its topic tags when a tags file has it, else its category path cut to 3 levels."""
    t = (tags or {}).get(product.product_id)
    if t and t.get("topic"):
        return {str(x).lower() for x in t["topic"]}
    return {" > ".join(product.category[:3]).lower()} if product.category else set()


@dataclass
class AttributeContext:
    """Catalogue-level inputs: the brand vocabulary and each query's BM25 top-k topic keys and roots."""

    brands: set[tuple[str, ...]]
    products: Mapping[str, Product]
    tags: Mapping[str, dict] | None = None
    top: dict[str, list[str]] = field(default_factory=dict)  # query -> BM25 top product ids
    named: dict[str, set[tuple[str, ...]]] = field(default_factory=dict)  # query -> brands it names (memo)

    def query_brands(self, query: str) -> set[tuple[str, ...]]:
        if query not in self.named:
            self.named[query] = query_brands(query, self.brands)
        return self.named[query]

    @classmethod
    def build(cls, products: Mapping[str, Product], tags=None, bm25=None, queries: Sequence[str] = ()):
        """`bm25` (a `lref.rag.bm25.BM25Index` over `products`) gives each query's top products."""
        brands = {brand_key(p.brand) for p in products.values()}
        brands = {b for b in brands if b and len(" ".join(b)) >= 3 and not set(b) <= COLOURS | _STOP}
        in_titles: dict[str, int] = {}  # one-word brand -> titles of products of other brands that contain it
        for p in products.values():
            own = brand_key(p.brand)
            for w in set(tokens(p.title)):
                if (w,) in brands and (w,) != own:
                    in_titles[w] = in_titles.get(w, 0) + 1
        brands = {b for b in brands if len(b) > 1 or in_titles.get(b[0], 0) <= COMMON_BRAND_TITLES}
        ctx = cls(brands, products, tags)
        if bm25 is not None:
            ctx.top = {q: bm25.top(q, CATEGORY_TOP_K) for q in set(queries)}
        return ctx

    def category_features(self, query: str, product: Product) -> dict[str, float]:
        """Share of the query's BM25 top products that share a topic key / the root category with the product
        (the query's category, without any label). NaN when the query has no top products."""
        top = [self.products[p] for p in self.top.get(query, [])]
        if not top:
            return {"category_agreement": NAN, "root_agreement": NAN}
        keys = topic_keys(product, self.tags)
        root = product.category[0] if product.category else None
        return {
            "category_agreement": sum(bool(keys & topic_keys(p, self.tags)) for p in top) / len(top),
            "root_agreement": sum(bool(p.category) and p.category[0] == root for p in top) / len(top),
        }

    def features(self, query: str, product: Product, groups: Sequence[str] = GROUP_NAMES) -> dict[str, float]:
        """The features of the given groups for one pair."""
        make = {
            "brand": lambda: brand_features(query, product, self.query_brands(query)),
            "colour": lambda: colour_features(query, product),
            "units": lambda: unit_features(query, product),
            "negation": lambda: negation_features(query, product),
            "accessory": lambda: accessory_features(query, product),
            "category": lambda: self.category_features(query, product),
        }
        out: dict[str, float] = {}
        for g in groups:
            out.update(make[g]())
        return out


def select_groups(keep: Sequence[str] | None = None, drop: Sequence[str] | None = None) -> list[str]:
    """The groups in use: `keep` (default: all) without `drop`; unknown names are a ValueError."""
    for name in [*(keep or []), *(drop or [])]:
        if name not in FEATURE_GROUPS:
            raise ValueError(f"unknown feature group {name!r} (groups: {', '.join(GROUP_NAMES)})")
    chosen = GROUP_NAMES if keep is None else [g for g in GROUP_NAMES if g in keep]
    return [g for g in chosen if g not in set(drop or [])]


def group_features(groups: Sequence[str]) -> list[str]:
    return [f for g in groups for f in FEATURE_GROUPS[g]]
