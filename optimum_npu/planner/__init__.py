"""Capacity planner: which tensor-parallel size fits, and how fast it runs, before compiling for real.

``plan(model, npu_config, tensor_parallel_sizes)`` returns one ``PlanResult`` per size;
``format_table`` / ``to_json`` render them; ``optimum-npu plan`` is the command line.
"""

from optimum_npu.planner.models import BUILTIN_MODELS, load_hf_config
from optimum_npu.planner.planner import PlanResult, plan
from optimum_npu.planner.report import format_table, to_json

__all__ = ["BUILTIN_MODELS", "PlanResult", "format_table", "load_hf_config", "plan", "to_json"]
