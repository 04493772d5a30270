"""Scoring engines behind one interface; see `lref.engines.base`."""

from lref.engines.base import Engine, Prompt, ScoredPair, distribution

__all__ = ["Engine", "Prompt", "ScoredPair", "distribution"]
