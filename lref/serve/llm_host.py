"""The model host of the embedded server: one causal LM with named LoRA adapters, and its compute.

- One base model is loaded once; each `--lora NAME=PATH` is loaded beside it as a named PEFT adapter
  and picked per request by the `model` field (the base model's name runs with adapters disabled).
- `run(jobs)` completes a batch of jobs; jobs of one model share left-padded forward passes
  (`lref.engines.hf.last_token_logits`). Only the batcher's worker thread calls it, so switching
  adapters never races with another request.
- Logprobs are *processed* logprobs, as vLLM reports them with `--logprobs-mode processed_logprobs`
  (which `lref serve --engine vllm` sets): after `logit_bias` and `allowed_token_ids`, and after the
  temperature when sampling. `logprob_token_ids` returns the logprobs of exactly those tokens.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from lref.engines.hf import last_token_logits
from lref.serve.errors import RequestError

log = logging.getLogger(__name__)

NEG = -9999.0  # what vLLM writes for a -inf logprob (JSON has no infinity)


@dataclass
class Job:
    """One prompt to complete, already tokenised."""

    model: str
    ids: list[int]
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    logprobs: int | None = None
    logprob_token_ids: list[int] | None = None
    allowed_token_ids: list[int] | None = None
    logit_bias: dict[int, float] | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass
class Step:
    token: int
    logprob: float
    top: list[tuple[int, float]]


@dataclass
class Result:
    tokens: list[int]
    steps: list[Step]
    text: str
    finish_reason: str


class ModelHost:
    """A base model with named LoRA adapters, and the batched compute the server runs on it."""

    def __init__(
        self,
        model: str | Path,
        loras: dict[str, str | Path] | None = None,
        served_name: str | None = None,
        max_batch: int = 16,
        dtype: str = "float32",
    ):
        from lref.models import load_model

        self.loras = dict(loras or {})
        self.base_name = served_name or str(model)
        if self.base_name in self.loras:
            raise ValueError(f"LoRA name {self.base_name!r} is also the base model's name")
        m, tok = load_model(model, dtype=dtype)
        if self.loras:
            from peft import PeftModel

            items = list(self.loras.items())
            m = PeftModel.from_pretrained(m, str(items[0][1]), adapter_name=items[0][0])
            for name, path in items[1:]:
                m.load_adapter(str(path), adapter_name=name)
            m.eval()
        self.model, self.tokenizer = m, tok
        self.max_batch = max_batch
        self.pad_id = tok.pad_token_id or 0
        self.vocab_size = int(m.get_output_embeddings().weight.shape[0])
        self.max_model_len = int(getattr(m.config, "max_position_embeddings", 4096) or 4096)
        eos = {tok.eos_token_id}
        gen = getattr(m, "generation_config", None)
        if gen is not None and gen.eos_token_id is not None:
            eos |= set(gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id])
        self.eos_ids = {e for e in eos if e is not None}

    @property
    def names(self) -> list[str]:
        return [self.base_name, *self.loras]

    @property
    def device(self):
        return next(self.model.parameters()).device

    # ---------------------------------------------------------------------------------- adapters

    def adapter(self, name: str):
        """A context in which the model runs as `name` (the base model or one adapter)."""
        import contextlib

        if not self.loras:
            return contextlib.nullcontext()
        if name == self.base_name:
            return self.model.disable_adapter()
        self.model.set_adapter(name)
        return contextlib.nullcontext()

    # ----------------------------------------------------------------------------------- compute

    def run(self, jobs: list[Job]) -> list[Result]:
        """Complete every job; jobs of one model share batched forward passes. Called from one thread."""
        import torch

        out: list[Result | None] = [None] * len(jobs)
        by_model: dict[str, list[int]] = {}
        for i, j in enumerate(jobs):
            by_model.setdefault(j.model, []).append(i)
        with torch.inference_mode():
            for name, idx in by_model.items():
                with self.adapter(name):
                    for start in range(0, len(idx), self.max_batch):
                        chunk = idx[start : start + self.max_batch]
                        last = last_token_logits(self.model, [jobs[i].ids for i in chunk], self.pad_id)
                        for r, i in enumerate(chunk):
                            out[i] = self._complete(jobs[i], last[r])
        return out  # type: ignore[return-value]

    def _step(self, job: Job, logits, gen) -> Step:
        """Process logits as vLLM does (bias, allowed ids, temperature, top-k/top-p), then pick a token."""
        import torch

        x = logits.clone().double()
        if job.logit_bias:
            ids = torch.tensor(list(job.logit_bias), dtype=torch.long, device=x.device)
            x[ids] += torch.tensor(list(job.logit_bias.values()), dtype=x.dtype, device=x.device)
        if job.allowed_token_ids:
            keep = torch.full_like(x, float("-inf"))
            ids = torch.tensor(job.allowed_token_ids, dtype=torch.long, device=x.device)
            keep[ids] = x[ids]
            x = keep
        greedy = job.temperature == 0.0
        if not greedy:
            x = x / job.temperature
            if job.top_k and job.top_k > 0 and job.top_k < x.numel():
                kth = torch.topk(x, job.top_k).values[-1]
                x = torch.where(x < kth, torch.full_like(x, float("-inf")), x)
            if job.top_p < 1.0:
                sorted_x, order = torch.sort(x, descending=True)
                cum = torch.softmax(sorted_x, -1).cumsum(-1)
                drop = cum - torch.softmax(sorted_x, -1) > job.top_p
                x[order[drop]] = float("-inf")
        lp = torch.log_softmax(x, -1)
        token = int(lp.argmax()) if greedy else int(torch.multinomial(lp.exp(), 1, generator=gen))
        top: list[tuple[int, float]] = []
        if job.logprob_token_ids:
            top = [(t, float(lp[t])) for t in job.logprob_token_ids]
        elif job.logprobs:
            vals, ids = torch.topk(lp, min(job.logprobs, lp.numel()))
            top = list(zip(ids.tolist(), vals.tolist(), strict=True))
        if job.logprobs is not None and token not in {t for t, _ in top}:
            top.append((token, float(lp[token])))
        clamp = lambda v: v if v > NEG else NEG  # noqa: E731
        return Step(token, clamp(float(lp[token])), [(t, clamp(v)) for t, v in top])

    def _complete(self, job: Job, first_logits) -> Result:
        import torch

        gen = None
        if job.temperature > 0:
            gen = torch.Generator(device=first_logits.device)
            gen.manual_seed(job.seed if job.seed is not None else int(time.time_ns() % (2**31)))
        steps = [self._step(job, first_logits, gen)]
        past = None
        while True:
            tokens = [s.token for s in steps]
            if tokens[-1] in self.eos_ids:
                return self._result(steps, "stop", job)
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            if any(s and s in text for s in job.stop):
                return self._result(steps, "stop", job)
            if len(steps) >= job.max_tokens:
                return self._result(steps, "length", job)
            if past is None:
                inp = torch.tensor([job.ids + tokens], device=self.device)
            else:
                inp = torch.tensor([[tokens[-1]]], device=self.device)
            o = self.model(input_ids=inp, past_key_values=past, use_cache=True, logits_to_keep=1)
            past = o.past_key_values
            steps.append(self._step(job, o.logits[0, -1].float(), gen))

    def _result(self, steps: list[Step], reason: str, job: Job) -> Result:
        tokens = [s.token for s in steps]
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        for s in job.stop:
            if s and s in text:
                text = text[: text.index(s)]
        return Result(tokens, steps, text, reason)

    # ------------------------------------------------------------------------------- tokenising

    def encode(self, prompt: str | list[int], add_special_tokens: bool = False) -> list[int]:
        if isinstance(prompt, list):
            bad = [t for t in prompt if not 0 <= t < self.vocab_size]
            if bad:
                raise RequestError(f"token ids out of range [0, {self.vocab_size}): {bad[:5]}", param="prompt")
            return list(prompt)
        return self.tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"]

    def token_str(self, token: int, as_id: bool) -> str:
        return f"token_id:{token}" if as_id else self.tokenizer.decode([token])
