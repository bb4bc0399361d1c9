"""Serving: the offline ``LLM`` API and the OpenAI-compatible HTTP server, over the runtime's scheduler.

The names are imported on first use (the command line registers ``serve`` without loading a model stack).
"""

from optimum_npu.lazy import lazy_exports

_EXPORTS = {"LLM": "optimum_npu.serving.llm", "RequestOutput": "optimum_npu.serving.outputs",
            "CompletionOutput": "optimum_npu.serving.outputs",
            "InvalidParameterError": "optimum_npu.serving.sampling_params",
            "SamplingParams": "optimum_npu.serving.sampling_params"}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
