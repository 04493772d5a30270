"""The `Engine` interface: a label distribution per prompt, and free generation.

Every backend (hf, openai, vllm) turns the logits (or logprobs) of the verbalizer tokens at the
answer position into the same `Judgment` through `distribution`, so the numbers agree across
backends up to floating-point error: a softmax restricted to the verbalizers equals the full-vocabulary
probabilities renormalised over them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lref.labels import LabelScheme

Prompt = str | list[dict]  # rendered text, or chat messages that the backend renders itself


@dataclass
class ScoredPair:
    """One relevance judgment read from a model."""

    probs: list[float]  # per grade, in the scheme's order (highest grade first)
    score: float  # expected grade, normalised to [0, 1]
    label: str  # argmax label
    grade: int  # argmax grade value

    def probs_by_label(self, scheme: LabelScheme) -> dict[str, float]:
        return {g.label: p for g, p in zip(scheme.grades, self.probs, strict=True)}


def distribution(logits: Sequence[float], scheme: LabelScheme) -> ScoredPair:
    """Softmax over the verbalizer logits (or logprobs), in float64, into a `ScoredPair`."""
    x = np.asarray(logits, dtype=np.float64)
    if x.shape != (len(scheme.grades),):
        raise ValueError(f"expected {len(scheme.grades)} verbalizer logits, got shape {x.shape}")
    x = x - x.max()
    p = np.exp(x)
    p /= p.sum()
    values = np.asarray(scheme.values, dtype=np.float64)
    expected = float((p * values).sum())
    i = int(p.argmax())
    g = scheme.grades[i]
    return ScoredPair(probs=p.tolist(), score=scheme.normalise(expected), label=g.label, grade=g.value)


class Engine(ABC):
    """Scores prompts against a label scheme and generates text."""

    scheme: LabelScheme

    @abstractmethod
    def score(self, prompts: Sequence[Prompt], progress: bool = False) -> list[ScoredPair]:
        """One label distribution per prompt, read at the answer position in one forward pass."""

    @abstractmethod
    def generate(
        self, prompts: Sequence[Prompt], max_new_tokens: int = 128, temperature: float = 0.0, progress: bool = False
    ) -> list[str]:
        """The completion text of each prompt."""
