"""The serving engine core: a loaded decoder, its tokenizer and a ``Scheduler`` over its own KV pool.

Both the offline ``LLM`` and the HTTP server's engine thread drive it: ``add`` a prompt (``n``
sequences), ``step`` until done, read ``output``. It is not thread-safe: one thread owns it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from optimum_npu.models.vlm.modeling import NPUModelForImageTextToText
from optimum_npu.runtime import BlockManager, Request, RequestTooLongError, Scheduler, Sequence, StepRunner
from optimum_npu.runtime import SamplingParams as RuntimeSampling
from optimum_npu.serving.detokenizer import Detokenizer
from optimum_npu.serving.outputs import CompletionOutput, RequestOutput
from optimum_npu.serving.sampling_params import InvalidParameterError, SamplingParams
from optimum_npu.serving.token_chooser import HFTokenChooser
from optimum_npu.serving.tokenizer import SharedTokenizer
from optimum_npu.serving.vision import ImagePrompts, VisionInputs


@dataclass
class _Group:
    """The ``n`` sequences of one prompt."""

    prompt: str | None
    prompt_ids: list[int]
    params: SamplingParams
    requests: list[Request]
    texts: list[Detokenizer]


class EngineCore:
    """Continuous batching of text requests on a loaded ``NPUModelForCausalLM``.

    Args:
        model: the loaded model (its compiled graphs and device memory are used; its ``generate()`` must not run
            while this core serves, they share the KV cache memory).
        tokenizer: the model's tokenizer.
        num_kv_blocks: KV blocks the scheduler may use (at most the compiled ``kvcache_num_blocks``; default all).
        max_num_batched_tokens: tokens per step (see ``Scheduler``).
        enable_prefix_caching: reuse cached prompt blocks across requests (off for sliding-window models and
            vision-language models: image tokens are placeholders, so equal ids do not mean equal keys).

    A vision-language model serves its language model here; images are encoded on the engine thread when
    their request is added (``images`` prepares them from chat requests).
    """

    def __init__(self, model, tokenizer, num_kv_blocks: int | None = None, max_num_batched_tokens: int | None = None,
                 enable_prefix_caching: bool = True):
        runtime = model._runtime
        config = runtime.config
        if num_kv_blocks is not None and not config.blocks_per_sequence <= num_kv_blocks <= config.kvcache_num_blocks:
            raise ValueError(f"num_kv_blocks={num_kv_blocks} is out of range: the pool must hold one sequence of "
                             f"max_seq_len ({config.blocks_per_sequence} blocks) and at most the compiled "
                             f"kvcache_num_blocks={config.kvcache_num_blocks}")
        self.model = model
        self.tokenizer = tokenizer if isinstance(tokenizer, SharedTokenizer) else SharedTokenizer(tokenizer)
        self.config = config
        self.vocab_size = runtime.model.vocab_size
        self.multimodal = isinstance(model, NPUModelForImageTextToText)
        self.images = (ImagePrompts(model.artifact_dir, self.tokenizer, model.config.image_token_id, model.visual)
                       if self.multimodal else None)
        blocks = BlockManager(num_kv_blocks or config.kvcache_num_blocks, config.kvcache_block_size,
                              enable_prefix_caching and not runtime.model.has_sliding_layers and not self.multimodal,
                              max_sequences=config.batch_size)
        runner = StepRunner(runtime.engine, blocks, config.max_seq_len, config.blocks_per_sequence, runtime.new_stats)
        self.finish_hooks: list[Callable[[Request], None]] = []
        self.scheduler = Scheduler(runner, max_num_batched_tokens, on_finish=self._on_finish)
        eos = model.generation_config.eos_token_id
        self.eos_token_ids = tuple(eos if isinstance(eos, list) else ([] if eos is None else [eos]))
        self.groups: dict[str, _Group] = {}

    @property
    def max_seq_len(self) -> int:
        return self.config.max_seq_len

    def check(self, prompt_ids: list[int], params: SamplingParams) -> None:
        """Refuses, before queueing, token ids outside the vocabulary and requests that can never fit."""
        if not prompt_ids:
            raise InvalidParameterError("prompt", "the prompt is empty; give at least one token")
        bad = next((t for t in prompt_ids if not isinstance(t, int) or not 0 <= t < self.vocab_size), None)
        if bad is not None:
            raise InvalidParameterError("prompt", f"token id {bad!r} is not in [0, {self.vocab_size - 1}] "
                                                  f"(vocab_size={self.vocab_size}); use the model's tokenizer")
        self.scheduler.check(len(prompt_ids), params.max_tokens)

    def add(self, request_id: str, prompt_ids: list[int], params: SamplingParams, prompt: str | None = None,
            vision: VisionInputs | None = None) -> None:
        """Queues ``params.n`` sequences of a prompt (``InvalidParameterError`` / ``RequestTooLongError`` first);
        ``vision``: the prompt's images (vision-language models)."""
        if request_id in self.groups:
            raise ValueError(f"request id {request_id!r} is already in use")
        self.check(prompt_ids, params)
        if vision is not None and not self.multimodal:
            raise InvalidParameterError("messages", "this model takes no images (it is a text decoder)")
        extras, rope_delta = self._multimodal_inputs(prompt_ids, vision) if self.multimodal else (None, None)
        stop_ids = params.stop_token_ids + (() if params.ignore_eos else self.eos_token_ids)
        sampling = RuntimeSampling(max_new_tokens=params.max_tokens, stop_token_ids=stop_ids)
        requests, texts = [], []
        for index in range(params.n):
            text = Detokenizer(self.tokenizer, params.stop, params.skip_special_tokens)
            seed = None if params.seed is None else params.seed + index
            seq = Sequence((request_id, index), prompt_ids, sampling=sampling, extras=extras, rope_delta=rope_delta)
            request = Request(seq, choose=HFTokenChooser(params, seed), stop_check=text)
            requests.append(request)
            texts.append(text)
        self.groups[request_id] = _Group(prompt, list(prompt_ids), params, requests, texts)
        for request in requests:
            self.scheduler.add(request)

    def abort(self, request_id: str) -> RequestOutput | None:
        """Stops every sequence of a request and frees its blocks; returns its last output (None if unknown)."""
        group = self.groups.get(request_id)
        if group is None:
            return None
        for request in group.requests:
            if not request.finished:
                self.scheduler.abort(request.request_id)
        output = self.output(request_id)
        del self.groups[request_id]
        return output

    def step(self) -> list[RequestOutput]:
        """Runs one scheduler step; returns the outputs of the requests that changed (finished ones are dropped
        from the core after this)."""
        touched = dict.fromkeys(request.request_id[0] for request in self.scheduler.step())
        outputs = [self.output(request_id) for request_id in touched]
        for output in outputs:
            if output.finished:
                del self.groups[output.request_id]
        return outputs

    def output(self, request_id: str) -> RequestOutput:
        """The request's output so far (streamable text: see ``Detokenizer.stream_text``)."""
        group = self.groups[request_id]
        completions = []
        for index, (request, text) in enumerate(zip(group.requests, group.texts)):
            completions.append(CompletionOutput(
                index, text.stream_text(request.finished), request.seq.output_ids, request.finish_reason,
                list(request.logprobs) if group.params.logprobs is not None else None, request.ttft_s,
                request.itl_s, request.e2e_s, request.preemptions))
        return RequestOutput(request_id, group.prompt, group.prompt_ids, completions,
                             max(r.cached_tokens for r in group.requests))

    def _multimodal_inputs(self, prompt_ids: list[int], vision: VisionInputs | None) -> tuple[dict, int]:
        """The per-token prefill inputs (M-RoPE positions, visual embeddings) and the rope delta of a prompt of a
        vision-language model; its images are encoded now, their simulated time on the scheduler's clock."""
        ids = torch.tensor([prompt_ids], dtype=torch.long)
        images = {} if vision is None else {"pixel_values": vision.pixel_values, "image_grid_thw": vision.image_grid_thw}
        extras = self.model._prompt_extras(ids, None, [torch.ones(len(prompt_ids), dtype=torch.bool)], **images)
        annotations = self.model._batch_annotations()
        if annotations["visual"] is not None:
            self.scheduler.account(annotations["visual"].seconds)
        return extras[0], int(annotations["rope_deltas"][0])

    def _on_finish(self, request: Request) -> None:
        for hook in self.finish_hooks:
            hook(request)


__all__ = ["EngineCore", "RequestTooLongError"]
