"""The `openai` backend: scoring and generation through any OpenAI-compatible server (vLLM, `lref serve`).

How a distribution is read, exactly: one request with `max_tokens=1`, `temperature=1` and no
penalties, asking for the logprobs of the verbalizer tokens at the answer position:
- `logprob_token_ids=[verbalizer ids]` (vLLM's field for the logprobs of given tokens) with
  `logprobs=len(verbalizers)`;
- `allowed_token_ids=[verbalizer ids]` as well, so a vLLM that lacks `logprob_token_ids` but runs
  with `--logprobs-mode processed_logprobs` (as `lref serve --engine vllm` starts it) still returns
  exactly the verbalizers as its top logprobs;
- `return_tokens_as_token_ids=true`, so tokens come back as `token_id:N` and never collide as text.
Either way the logprobs differ from the full-vocabulary log-softmax by one shared constant, so the
softmax over them (`distribution`) equals the `hf` engine's softmax over the verbalizer logits.

Prompts that share a query are sent together (sorted, then one request per chunk of one query), so a
server's prefix cache reuses the instruction and the query. Requests go through the `openai` SDK
(`lref.engines.client`, vLLM's fields in `extra_body`), retry with exponential backoff on 429, 5xx,
connection errors and timeouts, and each has a timeout.

Chat prompts are rendered here with the model's chat template when a local tokenizer is given (and
sent to /v1/completions); without one they go to /v1/chat/completions and the server renders them.
Token counts for cutting product text then come from the server's /tokenize and /detokenize.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from lref.engines.base import Engine, Prompt, ScoredPair, distribution
from lref.engines.client import EndpointError, OpenAIClient
from lref.labels import LabelScheme, get_scheme

log = logging.getLogger(__name__)

__all__ = ["EndpointError", "OpenAIEngine", "RemoteTokenizer"]

# Sampling fields that keep the returned logprobs an unshifted log-softmax of the model's logits: the
# OpenAI ones, and vLLM's own (sent through the SDK's `extra_body`).
NEUTRAL_SAMPLING = {"temperature": 1.0, "top_p": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}
NEUTRAL_SAMPLING_VLLM = {"top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0}


class RemoteTokenizer:
    """The server's tokenizer through vLLM's /tokenize and /detokenize routes (cached)."""

    chat_template = None
    all_special_tokens: list[str] = []
    added_tokens_decoder: dict = {}

    def __init__(self, engine: OpenAIEngine):
        self.engine = engine
        self._cache: dict[str, list[int]] = {}

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        key = f"{int(add_special_tokens)}{text}"
        if key not in self._cache:
            body = {"model": self.engine.model, "prompt": text, "add_special_tokens": add_special_tokens}
            self._cache[key] = list(self.engine.client.post("/tokenize", body)["tokens"])
        return self._cache[key]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        body = {"model": self.engine.model, "tokens": list(ids)}
        return self.engine.client.post("/detokenize", body)["prompt"]


class OpenAIEngine(Engine):
    def __init__(
        self,
        base_url: str,
        model: str,
        scheme: LabelScheme | str = "esci",
        api_key: str | None = None,
        tokenizer=None,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        concurrency: int = 8,
        chunk_size: int = 8,
        transport=None,
    ):
        self.concurrency, self.chunk_size = max(1, concurrency), max(1, chunk_size)
        self.client = OpenAIClient(
            base_url, api_key, timeout, max_retries, backoff, max_connections=self.concurrency * 2, transport=transport
        )
        self.model = model
        self.scheme = get_scheme(scheme)
        if isinstance(tokenizer, str):
            from lref.models import load_tokenizer

            tokenizer = load_tokenizer(tokenizer)
        self.local_tokenizer = tokenizer is not None
        self.tokenizer = tokenizer if tokenizer is not None else RemoteTokenizer(self)
        self._verbalizer_ids: list[int] | None = None

    def close(self) -> None:
        self.client.close()

    # ----------------------------------------------------------------------------------- scoring

    @property
    def verbalizer_ids(self) -> list[int]:
        if self._verbalizer_ids is None:
            self._verbalizer_ids = self.scheme.token_ids(self.tokenizer)
        return self._verbalizer_ids

    def _logprob_fields(self) -> dict:
        """vLLM's fields for reading exactly the verbalizers' logprobs, neutral sampling included."""
        ids = self.verbalizer_ids
        return {
            **NEUTRAL_SAMPLING_VLLM,
            "logprob_token_ids": ids,
            "allowed_token_ids": ids,
            "return_tokens_as_token_ids": True,
        }

    def _text(self, prompt: Prompt) -> str:
        from lref.prompts import render_chat

        return prompt if isinstance(prompt, str) else render_chat(self.tokenizer, prompt)

    def _verbalizer_logprobs(self, top: dict[str, float], where: str) -> list[float]:
        """Logprobs of the verbalizers, in grade order, from a `{token: logprob}` map."""
        out = []
        for g, tid in zip(self.scheme.grades, self.verbalizer_ids, strict=True):
            v = top.get(f"token_id:{tid}", top.get(g.verbalizer))
            if v is None:
                raise EndpointError(
                    f"{where}: the server did not return the logprob of verbalizer {g.verbalizer!r} (token {tid}); "
                    "it needs vLLM's `logprob_token_ids` or `--logprobs-mode processed_logprobs` "
                    "(see docs/serving.md)"
                )
            out.append(float(v))
        return out

    def _score_completions(self, texts: list[str]) -> list[list[float]]:
        extra = {"add_special_tokens": False, **self._logprob_fields()}
        resp = self.client.call(
            "/v1/completions",
            lambda sdk: sdk.completions.create(
                model=self.model,
                prompt=texts,
                max_tokens=1,
                logprobs=len(self.verbalizer_ids),
                **NEUTRAL_SAMPLING,
                extra_body=extra,
            ),
        )
        choices = sorted(resp.choices, key=lambda c: c.index)
        if len(choices) != len(texts):
            raise EndpointError(f"/v1/completions: {len(texts)} prompts sent, {len(choices)} choices returned")
        return [self._verbalizer_logprobs(c.logprobs.top_logprobs[0], "/v1/completions") for c in choices]

    def _score_chat(self, messages: list[dict]) -> list[float]:
        resp = self.client.call(
            "/v1/chat/completions",
            lambda sdk: sdk.chat.completions.create(
                model=self.model,
                messages=messages,
                max_completion_tokens=1,
                logprobs=True,
                top_logprobs=len(self.verbalizer_ids),
                **NEUTRAL_SAMPLING,
                extra_body=self._logprob_fields(),
            ),
        )
        first = resp.choices[0].logprobs.content[0]
        top = {e.token: e.logprob for e in first.top_logprobs}
        top.setdefault(first.token, first.logprob)
        return self._verbalizer_logprobs(top, "/v1/chat/completions")

    def _groups(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        """Indices in chunks of one query each, in prompt order, so shared prefixes travel together."""

        def key(p: Prompt) -> str:
            text = p if isinstance(p, str) else "\x00".join(str(m.get("content", "")) for m in p)
            return text.rsplit("Product:", 1)[0]

        order = sorted(range(len(prompts)), key=lambda i: key(prompts[i]))
        chunks: list[list[int]] = []
        for i in order:
            if chunks and key(prompts[chunks[-1][0]]) == key(prompts[i]) and len(chunks[-1]) < self.chunk_size:
                chunks[-1].append(i)
            else:
                chunks.append([i])
        return chunks

    def verbalizer_logprobs(self, prompts: Sequence[Prompt], progress: bool = False) -> list[list[float]]:
        from tqdm.auto import tqdm

        out: list[list[float] | None] = [None] * len(prompts)
        chat = not self.local_tokenizer and any(not isinstance(p, str) for p in prompts)
        self.verbalizer_ids  # noqa: B018 - resolve once, before the threads start

        def run(chunk: list[int]) -> list[int]:
            if chat:
                for i in chunk:
                    p = prompts[i]
                    out[i] = self._score_chat(p) if not isinstance(p, str) else self._score_completions([p])[0]
            else:
                for i, lp in zip(chunk, self._score_completions([self._text(prompts[i]) for i in chunk]), strict=True):
                    out[i] = lp
            return chunk

        bar = tqdm(total=len(prompts), desc="scoring", unit="pair", disable=not progress)
        with ThreadPoolExecutor(self.concurrency) as pool:
            for chunk in pool.map(run, self._groups(prompts)):
                bar.update(len(chunk))
        bar.close()
        return out  # type: ignore[return-value]

    def score(self, prompts: Sequence[Prompt], progress: bool = False) -> list[ScoredPair]:
        return [distribution(lp, self.scheme) for lp in self.verbalizer_logprobs(prompts, progress)]

    # -------------------------------------------------------------------------------- generation

    def generate(
        self, prompts: Sequence[Prompt], max_new_tokens: int = 128, temperature: float = 0.0, progress: bool = False
    ) -> list[str]:
        from tqdm.auto import tqdm

        def one(p: Prompt) -> str:
            if isinstance(p, str) or self.local_tokenizer:
                resp = self.client.call(
                    "/v1/completions",
                    lambda sdk: sdk.completions.create(
                        model=self.model,
                        prompt=self._text(p),
                        max_tokens=max_new_tokens,
                        temperature=temperature,
                        extra_body={"add_special_tokens": False},
                    ),
                )
                return resp.choices[0].text
            resp = self.client.call(
                "/v1/chat/completions",
                lambda sdk: sdk.chat.completions.create(
                    model=self.model, messages=p, max_completion_tokens=max_new_tokens, temperature=temperature
                ),
            )
            return resp.choices[0].message.content or ""

        with ThreadPoolExecutor(self.concurrency) as pool:
            it = pool.map(one, prompts)
            return list(tqdm(it, total=len(prompts), desc="generating", unit="prompt", disable=not progress))
