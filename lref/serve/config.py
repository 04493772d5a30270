"""What `lref serve` serves, as one dataclass (help text in field metadata), and building it.

Any mix of the LLM judge (`model` with `lora` adapters), a ranking student, an LTR pipeline, a
recall student with its index, and a catalogue; all in one process on one port.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Literal

log = logging.getLogger(__name__)


@dataclass
class Limits:
    """Per-request limits; a request past one gets a 400 with the reason."""

    max_documents: int = field(default=1000, metadata={"help": "most documents in one rerank / score request"})
    max_text_chars: int = field(default=20_000, metadata={"help": "longest query or document text, in characters"})
    max_queue: int = field(default=256, metadata={"help": "most requests waiting; past it the server answers 503"})


@dataclass
class ServeConfig:
    """Serve the LLM judge over the OpenAI API and the students over rerank / score / search routes."""

    model: str | None = field(default=None, metadata={"help": "base LLM folder or Hub id (the LLM judge)"})
    lora: list[str] = field(
        default_factory=list,
        metadata={"help": "a LoRA adapter NAME=PATH (repeatable)", "action": "append", "metavar": "NAME=PATH"},
    )
    served_model_name: str | None = field(default=None, metadata={"help": "name of --model in /v1/models"})
    ranker: str | None = field(
        default=None, metadata={"help": "cross-encoder student folder, served as `ranker` (or NAME=DIR)"}
    )
    int8: bool = field(
        default=True, metadata={"help": "run the cross-encoder (and the LTR's) with int8 linear layers on CPU"}
    )
    ranker_backend: Literal["torch", "onnx"] = field(
        default="torch",
        metadata={"help": "cross-encoder runtime: torch, or onnx (ONNX Runtime, exported on first use)"},
    )
    ltr: str | None = field(default=None, metadata={"help": "LTR model folder, served as `ltr` (or NAME=DIR)"})
    recall: str | None = field(
        default=None, metadata={"help": "bi-encoder student folder with its index/, served as `recall` (or NAME=DIR)"}
    )
    products: str | None = field(default=None, metadata={"help": "catalogue (products.jsonl) to name products by id"})
    scheme: str = field(default="esci", metadata={"help": "label scheme of the LLM judge: esci, lref5 or binary"})
    host: str = field(default="127.0.0.1", metadata={"help": "interface to listen on (0.0.0.0 for all)"})
    port: int = field(default=8000, metadata={"help": "port to listen on"})
    api_key: str | None = field(default=None, metadata={"help": "require `Authorization: Bearer KEY` on API routes"})
    max_batch: int = field(default=32, metadata={"help": "embedded: most prompts in one forward pass"})
    max_documents: int = field(default=1000, metadata={"help": "most documents in one rerank / score request"})
    max_text_chars: int = field(default=20_000, metadata={"help": "longest query or document text, in characters"})
    max_queue: int = field(default=256, metadata={"help": "most requests waiting; past it the server answers 503"})

    def limits(self) -> Limits:
        return Limits(self.max_documents, self.max_text_chars, self.max_queue)

    def named(self, value: str | None, default: str) -> tuple[str, str] | None:
        """(served name, folder) from `DIR` or `NAME=DIR`."""
        if not value:
            return None
        name, sep, path = value.partition("=")
        return (name, path) if sep and name and not os.path.exists(value) else (default, value)


def parse_loras(items: list[str]) -> dict[str, str]:
    from lref.config import ConfigError

    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--lora {item!r}: expected NAME=PATH")
        if name in out:
            raise ConfigError(f"--lora {item!r}: the name {name!r} is given twice")
        out[name] = path
    return out


def build(cfg: ServeConfig):
    """Load everything `cfg` names: (LLM host or None, {served name: scorer}, catalogue or None)."""
    from lref.config import ConfigError
    from lref.serve.scorers import Catalogue, JudgeScorer, LTRScorer, RankerScorer, RecallScorer

    for flag, value in (("--ranker", cfg.ranker), ("--ltr", cfg.ltr), ("--recall", cfg.recall)):
        named = cfg.named(value, "")
        if named and not os.path.isdir(named[1]):
            raise FileNotFoundError(f"{flag} {value}: no such model folder")
    if cfg.products and not os.path.exists(cfg.products):
        raise FileNotFoundError(f"--products {cfg.products}: no such file")
    if not (cfg.model or cfg.ranker or cfg.ltr or cfg.recall):
        raise ConfigError("nothing to serve: give --model, --ranker, --ltr or --recall")
    catalogue = Catalogue.load(cfg.products) if cfg.products else None
    host, scorers = None, {}

    def add(s) -> None:
        if s.name in scorers:
            raise ConfigError(f"two models are served as {s.name!r}: give one of them NAME=DIR")
        scorers[s.name] = s

    if cfg.model:
        from lref.serve.llm_host import ModelHost

        host = ModelHost(cfg.model, parse_loras(cfg.lora), cfg.served_model_name, max_batch=min(cfg.max_batch, 16))
        for name in host.names:
            add(JudgeScorer(name, host, cfg.scheme))
    if named := cfg.named(cfg.ranker, "ranker"):
        add(RankerScorer(*named, int8=cfg.int8, backend=cfg.ranker_backend))
    if named := cfg.named(cfg.ltr, "ltr"):
        add(LTRScorer(*named, catalogue, int8=cfg.int8))
    if named := cfg.named(cfg.recall, "recall"):
        add(RecallScorer(*named))
    return host, scorers, catalogue
