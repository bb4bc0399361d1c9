"""Capacity planner: which tensor-parallel size fits, and how fast it runs, before compiling for real.

``plan(model, npu_config, tensor_parallel_sizes)`` returns one ``PlanResult`` per size;
``format_table`` / ``to_json`` render them; ``optimum-npu plan`` is the command line. The names are
imported on first use (the command line registers ``plan`` without loading the planner).
"""

from optimum_npu.lazy import lazy_exports

_EXPORTS = {"BUILTIN_MODELS": "optimum_npu.planner.models", "load_hf_config": "optimum_npu.planner.models",
            "PlanResult": "optimum_npu.planner.planner", "plan": "optimum_npu.planner.planner",
            "format_table": "optimum_npu.planner.report", "to_json": "optimum_npu.planner.report"}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
