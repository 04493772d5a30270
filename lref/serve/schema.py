"""Request and response bodies of the OpenAI routes, following vLLM's schema (vllm.entrypoints.openai, 0.32).

Only the fields lref serves are typed; other fields a vLLM client may send are accepted and ignored
(vLLM does the same, with a warning), so one client works against both servers. Field bounds here
are the embedded server's limits: a request outside them gets a 400 with the reason.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_LOGPROBS = 20  # vLLM's default --max-logprobs


class _Base(BaseModel):
    model_config = ConfigDict(extra="allow")


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


# ------------------------------------------------------------------------------------------ requests


class SamplingFields(_Base):
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1, le=4096)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1)
    n: int = Field(1, ge=1, le=1)  # the embedded server returns one choice per prompt
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = Field(False)
    logit_bias: dict[str, float] | None = None
    allowed_token_ids: list[int] | None = None
    logprob_token_ids: list[int] | None = Field(None, min_length=1)
    return_tokens_as_token_ids: bool | None = None
    repetition_penalty: float | None = Field(None, gt=0.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)

    @model_validator(mode="after")
    def _supported(self):
        if self.stream:
            raise ValueError("stream=true is not supported by the embedded server")
        for name in ("repetition_penalty",):
            v = getattr(self, name)
            if v is not None and v != 1.0:
                raise ValueError(f"{name} other than 1.0 is not supported by the embedded server")
        for name in ("presence_penalty", "frequency_penalty"):
            v = getattr(self, name)
            if v not in (None, 0.0):
                raise ValueError(f"{name} other than 0 is not supported by the embedded server")
        if self.logit_bias:
            for k, v in self.logit_bias.items():
                if not k.lstrip("-").isdigit():
                    raise ValueError(f"logit_bias keys must be token ids, got {k!r}")
                if not -100.0 <= v <= 100.0:
                    raise ValueError(f"logit_bias values must lie in [-100, 100], got {v}")
        return self


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=1, le=4096)
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    echo: bool | None = False
    add_special_tokens: bool = True

    @model_validator(mode="after")
    def _prompt(self):
        if self.echo:
            raise ValueError("echo=true is not supported by the embedded server")
        if self.prompt == "" or self.prompt == []:
            raise ValueError("prompt must be non-empty")
        if self.logprob_token_ids is not None and self.logprobs is None:
            raise ValueError("when using `logprob_token_ids`, `logprobs` must be set")
        return self

    def prompts(self) -> list[str | list[int]]:
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if all(isinstance(x, int) for x in p):
            return [p]  # one tokenised prompt
        return list(p)


class ChatMessage(_Base):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text":
                raise ValueError(f"content part of type {part.get('type')!r} is not supported (text only)")
            parts.append(str(part.get("text", "")))
        return "".join(parts)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=4096)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    add_generation_prompt: bool = True

    @model_validator(mode="after")
    def _logprobs(self):
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs=true")
        return self

    def new_tokens(self) -> int:
        return self.max_completion_tokens or self.max_tokens or 16


class TokenizeRequest(_Base):
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = False
    add_generation_prompt: bool = True

    @model_validator(mode="after")
    def _one(self):
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        return self


class DetokenizeRequest(_Base):
    model: str | None = None
    tokens: list[int]


# ----------------------------------------------------------------------------------------- responses


class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    total_tokens: int = 0
    completion_tokens: int | None = 0
    prompt_tokens_details: dict | None = None


class CompletionLogProbs(BaseModel):
    text_offset: list[int] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    tokens: list[str] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)


class CompletionResponseChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogProbs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    prompt_logprobs: list | None = None


class ResponseFields(BaseModel):
    """The fields vLLM's completion and chat responses share."""

    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    service_tier: str | None = None
    system_fingerprint: str | None = None
    usage: UsageInfo
    kv_transfer_params: dict | None = None


class CompletionResponse(ResponseFields):
    id: str = Field(default_factory=lambda: _id("cmpl"))
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionResponseChoice]


class ChatCompletionLogProb(BaseModel):
    token: str
    logprob: float = -9999.0
    bytes: list[int] | None = None


class ChatCompletionLogProbsContent(ChatCompletionLogProb):
    top_logprobs: list[ChatCompletionLogProb] = Field(default_factory=list)


class ChatCompletionLogProbs(BaseModel):
    content: list[ChatCompletionLogProbsContent] | None = None


class ChatResponseMessage(BaseModel):
    role: str = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list = Field(default_factory=list)
    reasoning_content: str | None = None


class ChatCompletionResponseChoice(BaseModel):
    index: int
    message: ChatResponseMessage
    logprobs: ChatCompletionLogProbs | None = None
    finish_reason: str | None = "stop"
    stop_reason: int | str | None = None


class ChatCompletionResponse(ResponseFields):
    id: str = Field(default_factory=lambda: _id("chatcmpl"))
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatCompletionResponseChoice]
    prompt_logprobs: list | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "lref"
    root: str | None = None
    parent: str | None = None
    max_model_len: int | None = None
    kind: str | None = None  # lref: llm, ranker, ltr or recall


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard] = Field(default_factory=list)


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]


class DetokenizeResponse(BaseModel):
    prompt: str


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int


class ErrorResponse(BaseModel):
    error: ErrorInfo
