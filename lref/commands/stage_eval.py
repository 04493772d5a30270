"""The evaluation the training commands hand to their stages: eval harness metrics of a model in memory.

The training stages (`lref.train`) never import the eval harness; they take an `evaluate(model,
tokenizer)` function. This module, in the command layer above both, builds that function from the
harness (`score_rows`, `compute_metrics`) and the LLM scorer on the `hf` engine.
"""

from __future__ import annotations

from functools import partial

from lref.data import Corpus
from lref.train.stage import Evaluate

EVAL_KEYS = ("macro_f1", "accuracy", "over_grading_rate", "under_grading_rate", "ndcg@10")


def evaluate_model(model, tokenizer, corpus: Corpus, batch_size: int = 32, max_product_tokens: int = 256) -> dict:
    """The harness metrics (EVAL_KEYS) of a model on a corpus, reading the answer in one forward pass.

    The model is scored in eval mode and left in the mode it was in.
    """
    from lref.engines.hf import HFEngine
    from lref.engines.judge import LLMScorer
    from lref.eval.harness import score_rows
    from lref.eval.metrics import compute_metrics

    was_training = model.training
    model.eval()
    engine = HFEngine(model, tokenizer, corpus.scheme, batch_size=batch_size)
    rows = score_rows(corpus, LLMScorer(engine, max_product_tokens), progress=False)
    if was_training:
        model.train()
    m = compute_metrics(rows, corpus.scheme)
    return {k: m[k] for k in EVAL_KEYS}


def harness_evaluator(corpus: Corpus | None, batch_size: int = 32, max_product_tokens: int = 256) -> Evaluate | None:
    """`evaluate(model, tokenizer)` giving `evaluate_model` on `corpus`, or None when there is no corpus."""
    if corpus is None:
        return None
    return partial(evaluate_model, corpus=corpus, batch_size=batch_size, max_product_tokens=max_product_tokens)
