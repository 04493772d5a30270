"""The embedded CPU server: vLLM's OpenAI routes over a transformers model and its LoRA adapters.

- One base model is loaded once; each `--lora NAME=PATH` is loaded beside it as a named PEFT adapter
  and picked per request by the `model` field (the base model's name runs with adapters disabled).
- Concurrent requests are batched: handlers put jobs on a queue, and one worker thread takes what has
  arrived, groups it by model and runs each group as one left-padded forward pass. Only that thread
  touches the model, so switching adapters never races with another request.
- Logprobs are *processed* logprobs, as vLLM reports them with `--logprobs-mode processed_logprobs`
  (which `lref serve --engine vllm` sets): after `logit_bias` and `allowed_token_ids`, and after the
  temperature when sampling. `logprob_token_ids` returns the logprobs of exactly those tokens.
- Bad requests get a 4xx with an OpenAI-style JSON error; nothing returns a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from lref.prompts import render_chat
from lref.serve import schema as S

log = logging.getLogger(__name__)

NEG = -9999.0  # what vLLM writes for a -inf logprob (JSON has no infinity)


class RequestError(Exception):
    """A client error: becomes an HTTP status and an OpenAI-style JSON error body."""

    def __init__(self, message: str, status: int = 400, type_: str = "BadRequestError", param: str | None = None):
        super().__init__(message)
        self.status, self.type, self.param = status, type_, param


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

    def _adapter(self, name: str):
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
                with self._adapter(name):
                    for start in range(0, len(idx), self.max_batch):
                        chunk = idx[start : start + self.max_batch]
                        last = self._last_logits([jobs[i].ids for i in chunk])
                        for r, i in enumerate(chunk):
                            out[i] = self._complete(jobs[i], last[r])
        return out  # type: ignore[return-value]

    def _last_logits(self, seqs: list[list[int]]):
        """(len(seqs), vocab) float32 next-token logits, from one left-padded forward pass."""
        import torch

        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, width - len(s) :] = torch.tensor(s)
            mask[r, width - len(s) :] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        dev = self.device
        logits = self.model(
            input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev), logits_to_keep=1
        ).logits
        return logits[:, -1, :].float()

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


# ----------------------------------------------------------------------------------------- batching


class Batcher:
    """Collects jobs from concurrent requests and runs them in batches on one worker thread."""

    def __init__(self, host: ModelHost, max_batch: int = 32):
        self.host = host
        self.max_batch = max_batch
        self.queue: asyncio.Queue | None = None
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="lref-model")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
        self.pool.shutdown(wait=False)

    async def submit(self, jobs: list[Job]) -> list[Result]:
        loop = asyncio.get_running_loop()
        futs = [loop.create_future() for _ in jobs]
        for j, f in zip(jobs, futs, strict=True):
            self.queue.put_nowait((j, f))
        return list(await asyncio.gather(*futs))

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            await asyncio.sleep(0)  # let handlers that are ready enqueue too
            while len(items) < self.max_batch and not self.queue.empty():
                items.append(self.queue.get_nowait())
            items = [(j, f) for j, f in items if not f.cancelled()]
            if not items:
                continue
            try:
                results = await loop.run_in_executor(self.pool, self.host.run, [j for j, _ in items])
            except Exception as e:  # a bug or resource problem: fail these requests, keep serving
                log.exception("batch of %d failed", len(items))
                for _, f in items:
                    if not f.done():
                        f.set_exception(e)
                continue
            for (_, f), r in zip(items, results, strict=True):
                if not f.done():
                    f.set_result(r)


# ---------------------------------------------------------------------------------------------- app


def _error(status: int, message: str, type_: str, param: str | None = None):
    from fastapi.responses import JSONResponse

    body = S.ErrorResponse(error=S.ErrorInfo(message=message, type=type_, param=param, code=status))
    return JSONResponse(body.model_dump(), status_code=status)


def _validation_message(errors) -> tuple[str, str | None]:
    parts, param = [], None
    for e in errors[:5]:
        loc = [str(x) for x in e.get("loc", ()) if x != "body"]
        if loc and param is None:
            param = loc[0]
        msg = e.get("msg", "invalid")
        parts.append(f"{'.'.join(loc) or 'body'}: {msg}")
    return "; ".join(parts), param


def create_app(host: ModelHost, api_key: str | None = None, max_batch: int = 32):
    """The FastAPI app: /health, /v1/models, /v1/completions, /v1/chat/completions, /tokenize, /detokenize."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    batcher = Batcher(host, max_batch=max_batch)

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="lref embedded server", lifespan=lifespan)
    app.state.host = host

    @app.middleware("http")
    async def auth(request: Request, call_next):
        if api_key and request.url.path.startswith("/v1"):
            if request.headers.get("authorization", "") != f"Bearer {api_key}":
                return _error(401, "Unauthorized: missing or wrong API key", "AuthenticationError")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request, exc: RequestValidationError):
        msg, param = _validation_message(exc.errors())
        return _error(400, msg, "BadRequestError", param)

    @app.exception_handler(RequestError)
    async def on_request_error(request, exc: RequestError):
        return _error(exc.status, str(exc), exc.type, exc.param)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), "NotFoundError" if exc.status_code == 404 else "HTTPError")

    @app.exception_handler(Exception)
    async def on_bug(request, exc: Exception):
        log.exception("internal error on %s", request.url.path)
        return _error(500, f"internal error: {type(exc).__name__}", "InternalServerError")

    def resolve(model: str | None) -> str:
        if model is None:
            return host.base_name
        if model not in host.names:
            raise RequestError(f"The model `{model}` does not exist.", 404, "NotFoundError", "model")
        return model

    def job_for(req: S.SamplingFields, model: str, ids: list[int], max_tokens: int, n_logprobs: int | None) -> Job:
        if not ids:
            raise RequestError("prompt must not be empty", param="prompt")
        if len(ids) + max_tokens > host.max_model_len:
            raise RequestError(
                f"This model's maximum context length is {host.max_model_len} tokens. However, you requested "
                f"{len(ids) + max_tokens} tokens ({len(ids)} in the prompt, {max_tokens} for the completion).",
                param="max_tokens",
            )
        for name in ("allowed_token_ids", "logprob_token_ids"):
            bad = [t for t in getattr(req, name) or [] if not 0 <= t < host.vocab_size]
            if bad:
                raise RequestError(f"{name} out of vocabulary range [0, {host.vocab_size}): {bad[:5]}", param=name)
        bias = {int(k): v for k, v in (req.logit_bias or {}).items()}
        bad = [t for t in bias if not 0 <= t < host.vocab_size]
        if bad:
            raise RequestError(
                f"logit_bias token ids out of range [0, {host.vocab_size}): {bad[:5]}", param="logit_bias"
            )
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        return Job(
            model=model,
            ids=ids,
            max_tokens=max_tokens,
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            top_k=0 if req.top_k in (None, -1) else req.top_k,
            logprobs=n_logprobs,
            logprob_token_ids=req.logprob_token_ids,
            allowed_token_ids=req.allowed_token_ids,
            logit_bias=bias or None,
            stop=stop,
            seed=req.seed,
        )

    def chat_text(messages: list[S.ChatMessage], add_generation_prompt: bool = True) -> str:
        try:
            msgs = [{"role": m.role, "content": m.text()} for m in messages]
        except ValueError as e:
            raise RequestError(str(e), param="messages") from None
        if not add_generation_prompt:
            return host.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
        return render_chat(host.tokenizer, msgs)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        cards = [S.ModelCard(id=host.base_name, root=host.base_name, max_model_len=host.max_model_len)]
        cards += [S.ModelCard(id=n, root=str(p), parent=host.base_name) for n, p in host.loras.items()]
        return S.ModelList(data=cards)

    @app.post("/v1/completions")
    async def completions(req: S.CompletionRequest) -> S.CompletionResponse:
        model = resolve(req.model)
        jobs = [
            job_for(req, model, host.encode(p, req.add_special_tokens), req.max_tokens or 16, req.logprobs)
            for p in req.prompts()
        ]
        results = await batcher.submit(jobs)
        as_id = bool(req.return_tokens_as_token_ids)
        choices = []
        for i, r in enumerate(results):
            lp = None
            if req.logprobs is not None:
                lp = S.CompletionLogProbs()
                offset = 0
                for s in r.steps:
                    t = host.token_str(s.token, as_id)
                    lp.tokens.append(t)
                    lp.token_logprobs.append(s.logprob)
                    lp.top_logprobs.append({host.token_str(k, as_id): v for k, v in s.top})
                    lp.text_offset.append(offset)
                    offset += len(host.tokenizer.decode([s.token]))
            choices.append(
                S.CompletionResponseChoice(index=i, text=r.text, logprobs=lp, finish_reason=r.finish_reason)
            )
        n_prompt = sum(len(j.ids) for j in jobs)
        n_out = sum(len(r.tokens) for r in results)
        usage = S.UsageInfo(prompt_tokens=n_prompt, completion_tokens=n_out, total_tokens=n_prompt + n_out)
        return S.CompletionResponse(model=model, choices=choices, usage=usage)

    @app.post("/v1/chat/completions")
    async def chat(req: S.ChatCompletionRequest) -> S.ChatCompletionResponse:
        model = resolve(req.model)
        ids = host.encode(chat_text(req.messages, req.add_generation_prompt))
        n_lp = (req.top_logprobs or 0) if req.logprobs else None
        job = job_for(req, model, ids, req.new_tokens(), n_lp)
        (r,) = await batcher.submit([job])
        as_id = bool(req.return_tokens_as_token_ids)

        def entry(tok: int, v: float) -> S.ChatCompletionLogProb:
            t = host.token_str(tok, as_id)
            return S.ChatCompletionLogProb(token=t, logprob=v, bytes=list(host.tokenizer.decode([tok]).encode()))

        lp = None
        if req.logprobs:
            content = []
            for s in r.steps:
                e = entry(s.token, s.logprob)
                tops = [entry(k, v) for k, v in s.top][: max(req.top_logprobs or 0, len(req.logprob_token_ids or []))]
                content.append(S.ChatCompletionLogProbsContent(**e.model_dump(), top_logprobs=tops))
            lp = S.ChatCompletionLogProbs(content=content)
        msg = S.ChatResponseMessage(content=r.text)
        usage = S.UsageInfo(
            prompt_tokens=len(ids), completion_tokens=len(r.tokens), total_tokens=len(ids) + len(r.tokens)
        )
        choice = S.ChatCompletionResponseChoice(index=0, message=msg, logprobs=lp, finish_reason=r.finish_reason)
        return S.ChatCompletionResponse(model=model, choices=[choice], usage=usage)

    @app.post("/tokenize")
    async def tokenize(req: S.TokenizeRequest) -> S.TokenizeResponse:
        resolve(req.model)
        if req.messages is not None:
            ids = host.encode(chat_text(req.messages, req.add_generation_prompt))
        else:
            ids = host.encode(req.prompt, add_special_tokens=req.add_special_tokens)
        return S.TokenizeResponse(count=len(ids), max_model_len=host.max_model_len, tokens=ids)

    @app.post("/detokenize")
    async def detokenize(req: S.DetokenizeRequest) -> S.DetokenizeResponse:
        resolve(req.model)
        host.encode(req.tokens)  # range check
        return S.DetokenizeResponse(prompt=host.tokenizer.decode(req.tokens))

    return app


# ------------------------------------------------------------------------------------------ running


def serve(
    model: str,
    loras: dict[str, str] | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    served_name: str | None = None,
    max_batch: int = 32,
) -> None:
    """Load the model and serve until interrupted."""
    import uvicorn

    app = create_app(ModelHost(model, loras, served_name, max_batch=min(max_batch, 16)), api_key, max_batch)
    log.info("embedded server for %s on http://%s:%d", [model, *(loras or {})], host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning")


class BackgroundServer:
    """Run an app with uvicorn in a daemon thread (tests, benchmarks, notebooks). Use as a context manager."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import socket

        import uvicorn

        if port == 0:
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.host, self.port = host, port
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"embedded server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
