"""The OpenAI routes of the embedded server, as vLLM serves them: completions, chat, tokenize, detokenize.

They run on the LLM host (`lref.serve.llm_host`) through the batcher; request and response bodies
are `lref.serve.schema`'s.
"""

from __future__ import annotations

from fastapi import Request

from lref.prompts import render_chat
from lref.serve import schema as S
from lref.serve.errors import RequestError
from lref.serve.llm_host import Job


def openai_router(host, batcher):
    """An APIRouter with the OpenAI routes over `host` (a `ModelHost`)."""
    from fastapi import APIRouter

    errors = {c: {"model": S.ErrorResponse} for c in (400, 401, 404, 503)}
    router = APIRouter(responses=errors)

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

    @router.post("/v1/completions")
    async def completions(req: S.CompletionRequest, request: Request) -> S.CompletionResponse:
        model = request.state.model = resolve(req.model)
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

    @router.post("/v1/chat/completions")
    async def chat(req: S.ChatCompletionRequest, request: Request) -> S.ChatCompletionResponse:
        model = request.state.model = resolve(req.model)
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

    @router.post("/tokenize")
    async def tokenize(req: S.TokenizeRequest) -> S.TokenizeResponse:
        resolve(req.model)
        if req.messages is not None:
            ids = host.encode(chat_text(req.messages, req.add_generation_prompt))
        else:
            ids = host.encode(req.prompt, add_special_tokens=req.add_special_tokens)
        return S.TokenizeResponse(count=len(ids), max_model_len=host.max_model_len, tokens=ids)

    @router.post("/detokenize")
    async def detokenize(req: S.DetokenizeRequest) -> S.DetokenizeResponse:
        resolve(req.model)
        host.encode(req.tokens)  # range check
        return S.DetokenizeResponse(prompt=host.tokenizer.decode(req.tokens))

    return router
