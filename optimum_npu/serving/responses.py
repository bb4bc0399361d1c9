"""Shaping engine outputs into OpenAI response and stream-chunk bodies (completions and chat)."""

from __future__ import annotations

import json
import time

from optimum_npu.serving.outputs import CompletionOutput, RequestOutput
from optimum_npu.serving.tokenizer import SharedTokenizer


def usage(prompt_tokens: int, completion_tokens: int, cached: int = 0) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens, "prompt_tokens_details": {"cached_tokens": cached}}


def npu_timing(index: int, completion: CompletionOutput, cached: int) -> dict:
    """This server's extension: the simulated NPU timings of one choice (``npu`` in the body)."""
    return {"index": index, "simulated_ttft_s": completion.ttft_s, "simulated_itl_s": completion.itl_s,
            "simulated_e2e_s": completion.e2e_s, "preemptions": completion.preemptions, "cached_tokens": cached}


def completion_logprobs(tokenizer: SharedTokenizer, completion: CompletionOutput, start: int = 0) -> dict | None:
    """The legacy completions ``logprobs`` object for tokens ``start:``."""
    if completion.logprobs is None:
        return None
    tokens = completion.token_ids[start:]
    records = completion.logprobs[start:len(completion.token_ids)]
    return {"tokens": [tokenizer.token_text(t) for t in tokens],
            "token_logprobs": [r.logprob for r in records],
            "top_logprobs": [{tokenizer.token_text(t): lp for t, lp in r.top} for r in records],
            "text_offset": []}


def chat_logprobs(tokenizer: SharedTokenizer, completion: CompletionOutput, start: int = 0) -> dict | None:
    """The chat ``logprobs`` object (``content``: one entry per token) for tokens ``start:``."""
    if completion.logprobs is None:
        return None

    def entry(token: int, logprob: float) -> dict:
        text = tokenizer.token_text(token)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    content = []
    for token, record in zip(completion.token_ids[start:], completion.logprobs[start:]):
        content.append({**entry(token, record.logprob), "top_logprobs": [entry(t, lp) for t, lp in record.top]})
    return {"content": content}


class ChoiceIndex:
    """Maps (prompt index, completion index) to the OpenAI choice index: prompt i's j-th completion is i * n + j."""

    def __init__(self, n: int):
        self.n = n

    def __call__(self, prompt_index: int, completion: CompletionOutput) -> int:
        return prompt_index * self.n + completion.index


def sse(body: dict | str) -> str:
    return f"data: {body if isinstance(body, str) else json.dumps(body)}\n\n"


def envelope(request_id: str, kind: str, model: str, created: int | None = None) -> dict:
    return {"id": request_id, "object": kind, "created": created or int(time.time()), "model": model}


def final_outputs(outputs: list[RequestOutput]) -> tuple[int, int, int]:
    """(prompt tokens, completion tokens, cached prompt tokens) of finished requests."""
    prompt = sum(len(o.prompt_token_ids) for o in outputs)
    completion = sum(len(c.token_ids) for o in outputs for c in o.outputs)
    return prompt, completion, sum(o.cached_tokens for o in outputs)
