"""Serving: the offline ``LLM`` API and the OpenAI-compatible HTTP server, over the runtime's scheduler."""

from optimum_npu.serving.llm import LLM
from optimum_npu.serving.outputs import CompletionOutput, RequestOutput
from optimum_npu.serving.sampling_params import InvalidParameterError, SamplingParams

__all__ = ["LLM", "SamplingParams", "RequestOutput", "CompletionOutput", "InvalidParameterError"]
