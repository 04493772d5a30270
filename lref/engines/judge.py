"""The LLM judge as an eval scorer: any `Engine` plus the judgment prompt gives each pair a label distribution.

`LLMScorer.score(corpus)` returns, in judgment order, `{score, probs, pred_label}` per pair: the expected grade
and the distribution read from the verbalizer logits in one forward pass. Prompts keep the corpus order, which
groups them by query, so a server can reuse the cached prompt prefix.
"""

from __future__ import annotations

from lref.data import Corpus, render_product
from lref.prompts import judgment_messages


class LLMScorer:
    """A causal-LM judge through any `Engine`: one forward pass per pair, prompts grouped by query."""

    name = "llm"

    def __init__(self, engine, max_product_tokens: int = 256):
        self.engine = engine
        self.max_product_tokens = max_product_tokens

    def prompts(self, corpus: Corpus) -> list:
        tok = getattr(self.engine, "tokenizer", None)
        return [
            judgment_messages(
                j.query, render_product(corpus.products[j.product_id], self.max_product_tokens, tok), corpus.scheme
            )
            for j in corpus.judgments
        ]

    def score(self, corpus: Corpus, progress: bool = True) -> list[dict]:
        results = self.engine.score(self.prompts(corpus), progress=progress)
        scheme = self.engine.scheme
        return [{"score": r.score, "probs": r.probs_by_label(scheme), "pred_label": r.label} for r in results]
