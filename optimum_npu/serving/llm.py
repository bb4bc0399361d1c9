"""``LLM``: offline batch generation over the continuous-batching scheduler (``vllm.LLM``'s names)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence as Seq

from tqdm.auto import tqdm

from optimum_npu.serving.engine_core import EngineCore
from optimum_npu.serving.loading import load_for_serving
from optimum_npu.serving.outputs import RequestOutput
from optimum_npu.serving.sampling_params import SamplingParams


class LLM:
    """A compiled decoder served offline: every prompt of ``generate`` is queued at once and run with
    continuous batching on the compiled buckets.

    Args:
        model: a compiled artifact directory or a Hub repo id.
        tokenizer: tokenizer directory or id (default: the artifact's).
        device: simulated device id to load on.
        num_kv_blocks: KV blocks to use (default: the compiled pool).
        max_num_batched_tokens: tokens per scheduler step (default: a prefill chunk + the largest decode batch).
        enable_prefix_caching: reuse cached prompt blocks across requests.
    """

    def __init__(self, model: str | Path, tokenizer: str | Path | None = None, device: int | None = None,
                 num_kv_blocks: int | None = None, max_num_batched_tokens: int | None = None,
                 enable_prefix_caching: bool = True):
        self.model, self.tokenizer = load_for_serving(model, device=device, tokenizer=tokenizer)
        try:
            self.core = EngineCore(self.model, self.tokenizer, num_kv_blocks, max_num_batched_tokens,
                                   enable_prefix_caching)
        except ValueError:
            self.model.release()
            raise
        self._next_id = 0

    def generate(self, prompts: str | Seq[str] | Seq[list[int]],
                 sampling_params: SamplingParams | Seq[SamplingParams] | None = None,
                 use_tqdm: bool = True) -> list[RequestOutput]:
        """Generates for every prompt; returns one ``RequestOutput`` per prompt, in input order.

        Args:
            prompts: a string, a list of strings, or a list of token-id lists.
            sampling_params: one for all prompts or one per prompt (default ``SamplingParams()``).
            use_tqdm: show a progress bar of finished prompts.
        Raises:
            InvalidParameterError / RequestTooLongError: before anything runs, naming the prompt.
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if sampling_params is None or isinstance(sampling_params, SamplingParams):
            params = [sampling_params or SamplingParams()] * len(prompts)
        else:
            params = list(sampling_params)
            if len(params) != len(prompts):
                raise ValueError(f"sampling_params lists {len(params)} entries for {len(prompts)} prompts; give one "
                                 "SamplingParams or one per prompt")
        encoded = [(None, list(p)) if not isinstance(p, str) else (p, self.tokenizer.encode(p)) for p in prompts]
        for index, ((_, ids), p) in enumerate(zip(encoded, params)):
            try:
                self.core.check(ids, p)
            except ValueError as err:
                err.args = (f"prompt {index}: {err}",)
                raise
        ids_in_order = []
        for (text, ids), p in zip(encoded, params):
            request_id = f"llm-{self._next_id}"
            self._next_id += 1
            self.core.add(request_id, ids, p, prompt=text)
            ids_in_order.append(request_id)
        results: dict[str, RequestOutput] = {}
        with tqdm(total=len(prompts), desc="Processed prompts", disable=not use_tqdm) as bar:
            while len(results) < len(prompts):
                for output in self.core.step():
                    if output.finished:
                        results[output.request_id] = output
                        bar.update(1)
        return [results[request_id] for request_id in ids_in_order]

    @property
    def stats(self):
        """The scheduler's cumulative ``SchedulerStats`` (buckets, padding waste, preemptions, prefix cache)."""
        return self.core.scheduler.stats

    def release(self) -> None:
        """Frees the model's simulated-device memory."""
        self.model.release()
