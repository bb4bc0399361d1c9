"""``/v1/completions`` and ``/v1/chat/completions``: validated requests to the engine, outputs to OpenAI bodies
(whole, or as server-sent events with ``stream: true``)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import AsyncIterator

from fastapi.responses import JSONResponse, StreamingResponse

from optimum_npu.runtime import RequestTooLongError
from optimum_npu.serving.async_engine import AsyncEngine, EngineStoppedError
from optimum_npu.serving.errors import APIError
from optimum_npu.serving.outputs import RequestOutput
from optimum_npu.serving.protocol import ChatCompletionRequest, CompletionRequest
from optimum_npu.serving.responses import (ChoiceIndex, chat_logprobs, completion_logprobs, envelope, final_outputs,
                                           npu_timing, sse, usage)
from optimum_npu.serving.sampling_params import InvalidParameterError, SamplingParams
from optimum_npu.serving.vision import VisionInputs, decode_image

_KINDS = {"completion": ("text_completion", "text_completion", "cmpl"),
          "chat": ("chat.completion", "chat.completion.chunk", "chatcmpl")}


class OpenAIHandlers:
    """The two generation endpoints of one served model.

    Args:
        engine: the running engine thread.
        model_name: the name clients must send as ``model``.
        chat_template: a Jinja chat template overriding the tokenizer's (None: the tokenizer's own).
    """

    def __init__(self, engine: AsyncEngine, model_name: str, chat_template: str | None = None):
        self.engine = engine
        self.core = engine.core
        self.tokenizer = engine.core.tokenizer
        self.model_name = model_name
        self.chat_template = chat_template

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.model_name:
            raise APIError(404, f"The model `{name[:100]}` does not exist; this server serves `{self.model_name}` "
                                "(see GET /v1/models)", param="model", code="model_not_found")

    def _params(self, request, prompts: list[list[int]], max_tokens: int | None, logprobs: int | None,
                max_param: str) -> SamplingParams:
        if max_tokens is None:   # chat default: what is left of max_seq_len after the longest prompt
            max_tokens = max(1, self.core.max_seq_len - max(len(p) for p in prompts))
        try:
            params = request.sampling_params(max_tokens, logprobs)
            for ids in prompts:
                self.core.check(ids, params)
        except InvalidParameterError as err:
            raise APIError(400, str(err), param=err.param) from None
        except RequestTooLongError as err:
            prompt_param = "messages" if isinstance(request, ChatCompletionRequest) else "prompt"
            param = prompt_param if err.prompt_tokens >= err.limit else max_param
            raise APIError(400, f"This model's maximum context length is {self.core.max_seq_len} tokens: {err}",
                           param=param, code="context_length_exceeded") from None
        return params

    # ---- endpoints ------------------------------------------------------------------------------
    async def completions(self, request: CompletionRequest):
        self.check_model(request.model)
        try:
            raw = request.prompts()
            prompts = [p if isinstance(p, list) else self.tokenizer.encode(p) for p in raw]
        except InvalidParameterError as err:
            raise APIError(400, str(err), param=err.param) from None
        params = self._params(request, prompts, request.max_tokens, request.logprobs, "max_tokens")
        texts = [p if isinstance(p, str) else None for p in raw]
        return await self._respond("completion", request, prompts, texts, params)

    async def chat(self, request: ChatCompletionRequest):
        self.check_model(request.model)
        if not self.chat_template and not self.tokenizer.has_chat_template:
            raise APIError(400, "this model's tokenizer has no chat template; start the server with --chat-template "
                                "FILE or use /v1/completions", param="messages")
        try:
            text, prompt_ids, vision = self._render_chat(request)
        except InvalidParameterError as err:
            raise APIError(400, str(err), param=err.param) from None
        prompts = [prompt_ids]
        top = request.top_logprobs or 0
        logprobs = top if request.logprobs else None
        if request.top_logprobs is not None and not request.logprobs:
            raise APIError(400, "top_logprobs needs logprobs=true", param="top_logprobs")
        explicit = request.max_completion_tokens is not None
        params = self._params(request, prompts, request.max_completion_tokens if explicit else request.max_tokens,
                              logprobs, "max_completion_tokens" if explicit else "max_tokens")
        return await self._respond("chat", request, prompts, [text], params, vision)

    def _render_chat(self, request: ChatCompletionRequest) -> tuple[str, list[int], VisionInputs | None]:
        """The prompt text, its token ids and, for a vision-language model, its images' inputs."""
        images = []
        if self.core.multimodal:
            conversation, urls = request.conversation_with_images()
            images = [decode_image(url, param) for url, param in urls]
        else:
            conversation = request.conversation()
        try:
            text = self.tokenizer.chat_prompt(conversation, self.chat_template)
        except Exception as err:  # noqa: BLE001 - a template error is the conversation's fault
            raise InvalidParameterError("messages", f"the chat template cannot render these messages: {err}") from None
        if self.core.multimodal:
            return (text, *self.core.images.prepare(text, images))
        return text, self.tokenizer.encode_chat(text), None

    # ---- running and answering ------------------------------------------------------------------
    async def _respond(self, kind: str, request, prompts, texts, params: SamplingParams,
                       vision: VisionInputs | None = None):
        request_id = f"{_KINDS[kind][2]}-{uuid.uuid4().hex}"
        results = self._merged(request_id, prompts, texts, params, vision)
        if request.stream:
            include_usage = bool(request.stream_options and request.stream_options.include_usage)
            return StreamingResponse(self._stream(kind, request_id, results, params.n, include_usage),
                                     media_type="text/event-stream")
        finals: dict[int, RequestOutput] = {}
        try:
            async for index, output in results:
                finals[index] = output
        except EngineStoppedError as err:
            raise APIError(503, str(err), code="service_unavailable") from None
        outputs = [finals[i] for i in range(len(prompts))]
        choice_index = ChoiceIndex(params.n)
        choices, timing = [], []
        for prompt_index, output in enumerate(outputs):
            for completion in output.outputs:
                index = choice_index(prompt_index, completion)
                timing.append(npu_timing(index, completion, output.cached_tokens))
                if kind == "chat":
                    choices.append({"index": index, "message": {"role": "assistant", "content": completion.text},
                                    "logprobs": chat_logprobs(self.tokenizer, completion),
                                    "finish_reason": completion.finish_reason})
                else:
                    choices.append({"index": index, "text": completion.text,
                                    "logprobs": completion_logprobs(self.tokenizer, completion),
                                    "finish_reason": completion.finish_reason})
                if request.return_token_ids:
                    choices[-1]["token_ids"] = completion.token_ids
        body = envelope(request_id, _KINDS[kind][0], self.model_name)
        body.update(choices=choices, usage=usage(*final_outputs(outputs)), npu=timing)
        return JSONResponse(body)

    async def _merged(self, request_id: str, prompts, texts, params,
                      vision: VisionInputs | None = None) -> AsyncIterator[tuple[int, RequestOutput]]:
        """Every prompt's outputs as they come, tagged with the prompt index; closing it aborts what is left."""
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(index: int) -> None:
            try:
                async for output in self.engine.generate(f"{request_id}-{index}", prompts[index], params,
                                                         texts[index], vision):
                    queue.put_nowait((index, output))
            except Exception as err:  # noqa: BLE001 - re-raised by the consumer below
                queue.put_nowait((index, err))

        tasks = [asyncio.create_task(pump(i)) for i in range(len(prompts))]
        finished = 0
        try:
            while finished < len(tasks):
                index, item = await queue.get()
                if isinstance(item, Exception):
                    raise item
                finished += item.finished
                yield index, item
        finally:
            for task in tasks:
                task.cancel()

    async def _stream(self, kind: str, request_id: str, results, n: int, include_usage: bool):
        created = int(time.time())
        chunk_kind = _KINDS[kind][1]
        choice_index = ChoiceIndex(n)
        sent_text: dict[int, int] = {}
        sent_tokens: dict[int, int] = {}
        finals: dict[int, RequestOutput] = {}
        try:
            async for prompt_index, output in results:
                finals[prompt_index] = output
                choices, timing = [], []
                for completion in output.outputs:
                    index = choice_index(prompt_index, completion)
                    first = index not in sent_text
                    delta = completion.text[sent_text.get(index, 0):]
                    start = sent_tokens.get(index, 0)
                    if not delta and not completion.finished and not first:
                        continue
                    sent_text[index] = len(completion.text)
                    sent_tokens[index] = len(completion.token_ids)
                    if kind == "chat":
                        choice = {"index": index, "delta": ({"role": "assistant", "content": delta} if first
                                                            else {"content": delta}),
                                  "logprobs": chat_logprobs(self.tokenizer, completion, start)}
                    else:
                        choice = {"index": index, "text": delta,
                                  "logprobs": completion_logprobs(self.tokenizer, completion, start)}
                    choice["finish_reason"] = completion.finish_reason
                    choices.append(choice)
                    if completion.finished:
                        timing.append(npu_timing(index, completion, output.cached_tokens))
                if choices:
                    body = envelope(request_id, chunk_kind, self.model_name, created)
                    body.update(choices=choices, usage=None, **({"npu": timing} if timing else {}))
                    yield sse(body)
            if include_usage:
                body = envelope(request_id, chunk_kind, self.model_name, created)
                body.update(choices=[], usage=usage(*final_outputs(list(finals.values()))))
                yield sse(body)
        except EngineStoppedError as err:
            yield sse(APIError(503, str(err), code="service_unavailable").body())
        except Exception as err:  # noqa: BLE001 - the headers are sent: the error goes in the stream
            yield sse(APIError(500, f"internal error: {type(err).__name__}: {err}", code="internal_error").body())
        finally:
            await results.aclose()
        yield sse("[DONE]")
