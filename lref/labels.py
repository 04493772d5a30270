"""Label schemes: ordered relevance grades, their names and one verbalizer token each.

A relevance judgment is a distribution over the grades of a scheme. Each grade is verbalised by a
string that must encode to exactly one token, so the distribution can be read from the logits at
the answer position in a single forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass


class LabelError(ValueError):
    """A label or verbalizer that does not fit the scheme or the tokenizer."""


@dataclass(frozen=True)
class Grade:
    label: str  # the name used in data files, e.g. "E"
    value: int  # the numeric grade, higher is more relevant
    verbalizer: str  # the answer text the model writes; must be one token
    definition: str  # shown to the model in the prompt


@dataclass(frozen=True)
class LabelScheme:
    """Ordered grades, most relevant first."""

    name: str
    grades: tuple[Grade, ...]
    aliases: tuple[tuple[str, str], ...] = ()  # extra spellings accepted in data files -> label

    def __post_init__(self) -> None:
        values = [g.value for g in self.grades]
        if values != sorted(values, reverse=True) or len(set(values)) != len(values):
            raise LabelError(f"scheme {self.name!r}: grades must be listed from highest to lowest, distinct")

    @property
    def labels(self) -> list[str]:
        return [g.label for g in self.grades]

    @property
    def values(self) -> list[int]:
        return [g.value for g in self.grades]

    @property
    def verbalizers(self) -> list[str]:
        return [g.verbalizer for g in self.grades]

    @property
    def max_value(self) -> int:
        return max(self.values)

    @property
    def min_value(self) -> int:
        return min(self.values)

    def index(self, label: str) -> int:
        """Position of a label (or alias, or verbalizer) in `grades`; raises LabelError if unknown."""
        key = str(label).strip()
        alias = dict(self.aliases)
        key = alias.get(key, alias.get(key.lower(), key))
        for i, g in enumerate(self.grades):
            if key in (g.label, g.verbalizer) or key.lower() == g.label.lower():
                return i
        raise LabelError(f"unknown label {label!r} for scheme {self.name!r} (expected one of {self.labels})")

    def grade_of(self, label: str) -> int:
        return self.grades[self.index(label)].value

    def label_of_value(self, value: int) -> str:
        for g in self.grades:
            if g.value == value:
                return g.label
        raise LabelError(f"no grade with value {value} in scheme {self.name!r}")

    def normalise(self, value: float) -> float:
        """Map a grade value onto [0, 1]."""
        return (value - self.min_value) / (self.max_value - self.min_value)

    def token_ids(self, tokenizer) -> list[int]:
        """The single token id of each verbalizer, in grade order.

        Raises LabelError naming the label whose verbalizer is not exactly one token.
        """
        ids = []
        for g in self.grades:
            enc = tokenizer.encode(g.verbalizer, add_special_tokens=False)
            if len(enc) != 1:
                raise LabelError(
                    f"label {g.label!r} of scheme {self.name!r}: verbalizer {g.verbalizer!r} is {len(enc)} tokens "
                    f"in this tokenizer ({enc}); each verbalizer must be exactly one token"
                )
            ids.append(enc[0])
        if len(set(ids)) != len(ids):
            raise LabelError(f"scheme {self.name!r}: two verbalizers map to the same token ({ids})")
        return ids


ESCI = LabelScheme(
    name="esci",
    grades=tuple(
        Grade(name, value, name, text)
        for name, value, text in (
            ("E", 3, "Exact: the product is what the query asks for and meets every stated attribute."),
            ("S", 2, "Substitute: the product does not match every attribute but could serve instead."),
            ("C", 1, "Complement: the product does not fit the query but goes with what was asked for."),
            ("I", 0, "Irrelevant: the product does not fit the query or misses a central aspect of it."),
        )
    ),
    aliases=(("exact", "E"), ("substitute", "S"), ("complement", "C"), ("irrelevant", "I")),
)

LREF5 = LabelScheme(
    name="lref5",
    grades=tuple(
        Grade(name, value, str(value), text)
        for name, value, text in (
            ("Exact", 4, "Exact: core product type and every modifier (brand, model, attributes) match."),
            ("Significant", 3, "Significant: core product type matches; a minor modifier differs."),
            ("Marginal", 2, "Marginal: core product type matches but an important modifier differs."),
            ("Trivial", 1, "Trivial: a related product (accessory or same category), not the one asked for."),
            ("Irrelevant", 0, "Irrelevant: the product has nothing to do with the query."),
        )
    ),
)

BINARY = LabelScheme(
    name="binary",
    grades=(
        Grade("yes", 1, "yes", "yes: the statement holds for this product."),
        Grade("no", 0, "no", "no: the statement does not hold for this product."),
    ),
    aliases=(("1", "yes"), ("0", "no"), ("true", "yes"), ("false", "no")),
)

PRESETS: dict[str, LabelScheme] = {s.name: s for s in (ESCI, LREF5, BINARY)}


def get_scheme(name: str | LabelScheme) -> LabelScheme:
    if isinstance(name, LabelScheme):
        return name
    try:
        return PRESETS[name]
    except KeyError:
        raise LabelError(f"unknown label scheme {name!r}; presets: {sorted(PRESETS)}") from None
