"""The one place an engine is made from user settings: a local model (`hf`) or a server (`openai`).

Commands (`lref score`, `lref eval --scorer llm`, `lref tag`), the distillation teacher and the
tagger all build their judge here, so a flag means the same thing everywhere: `endpoint` picks the
OpenAI-compatible server (and `model` is then the served model's name), otherwise `model` is a local
folder or Hub id with an optional LoRA `adapter`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lref.config import ConfigError
from lref.engines.base import Engine


def make_engine(
    model: str | None,
    endpoint: str | None = None,
    adapter: str | None = None,
    scheme: str = "esci",
    batch_size: int = 16,
    served_model: str | None = None,
    api_key: str | None = None,
) -> Engine:
    """The `openai` engine for `endpoint` (serving `served_model`, or `model`), else the `hf` engine for `model`.

    `api_key` defaults to $OPENAI_API_KEY; `batch_size` is the local engine's forward-pass batch.
    """
    if endpoint:
        from lref.engines.openai import OpenAIEngine

        return OpenAIEngine(base_url=endpoint, model=served_model or model, scheme=scheme, api_key=api_key)
    if not model:
        raise ConfigError("an LLM judge needs a model (--model) or a server (--endpoint)")
    from lref.engines.hf import HFEngine

    return HFEngine.from_pretrained(model, adapter=adapter, scheme=scheme, batch_size=batch_size)


@dataclass(kw_only=True)
class EngineArgs:
    """The flags that choose and feed an LLM judge, shared by the commands that score with one."""

    model: str | None = field(
        default=None, metadata={"help": "model folder or Hub id (with --endpoint: the served model name)"}
    )
    adapter: str | None = field(default=None, metadata={"help": "LoRA adapter folder"})
    endpoint: str | None = field(
        default=None,
        metadata={"help": "score through an OpenAI-compatible server at this URL (vLLM or `lref serve`)"},
    )
    api_key: str | None = field(default=None, metadata={"help": "the server's API key (default: $OPENAI_API_KEY)"})
    batch_size: int = field(default=16, metadata={"help": "prompts per forward pass of a local model"})
    max_product_tokens: int = field(default=256, metadata={"help": "product text is cut to this many tokens"})

    def engine(self, scheme: str = "esci") -> Engine:
        """The engine these flags describe, judging in `scheme`."""
        return make_engine(self.model, self.endpoint, self.adapter, scheme, self.batch_size, api_key=self.api_key)
