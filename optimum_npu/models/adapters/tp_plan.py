"""An adapter's ``tp_plan`` (styles by module pattern) resolved into the compiler's ``TensorParallelPlan``."""

from __future__ import annotations

from typing import Callable

from optimum_npu.compile.tensor_parallel import (STYLES, TensorParallelError, TensorParallelPlan, WeightSplit,
                                                 module_regex)
from optimum_npu.models.adapters.spec import DecoderAdapter

#: Fused column-parallel styles -> the full extent of each part, from the normalised model config.
FUSED_PARTS: dict[str, Callable] = {
    "colwise_qkv": lambda m: (m.num_heads * m.head_dim, m.num_kv_heads * m.head_dim, m.num_kv_heads * m.head_dim),
    "colwise_gate_up": lambda m: (m.intermediate_size, m.intermediate_size),
}


def decoder_tp_plan(adapter: DecoderAdapter, model, size: int, expert_parallel: bool = False) -> TensorParallelPlan:
    """The split of every weight the adapter declares, over ``size`` devices.

    Args:
        adapter: the architecture's adapter (module patterns relative to its text model).
        model: the ``DecoderModelConfig`` (sizes of fused parts).
        size: tensor-parallel size.
        expert_parallel: spread the experts over the ``size`` devices (their stacked weights are cut along
            the expert dimension); without it the routed experts are replicated.
    Raises:
        TensorParallelError: a style outside ``STYLES`` and ``FUSED_PARTS``, naming the module.
    """
    out_dim = 1 if adapter.linear == "conv1d" else 0  # Conv1D weights are [in, out]
    rules = []
    experts = f"{adapter.layers}.*.{adapter.mlp.module}.{adapter.moe.experts}" if adapter.moe else None
    if expert_parallel and size > 1:
        rules.append((module_regex(f"{adapter.text_model}.{experts}"), WeightSplit("colwise", 0)))  # [E/size, ...]
    for pattern, style in adapter.tp_plan.items():
        module = f"{adapter.text_model}.{pattern}"
        if experts is not None and pattern.startswith(experts):
            raise TensorParallelError(f"module {module} has tensor-parallel style {style!r}; the routed experts are "
                                      "replicated under tensor parallelism or spread with expert_parallel_size, and "
                                      "take no style in the adapter's tp_plan")
        if style in FUSED_PARTS:
            split = WeightSplit("colwise", out_dim, tuple(FUSED_PARTS[style](model)))
        elif style in STYLES:
            split = WeightSplit(style, out_dim)
        else:
            raise TensorParallelError(f"module {module} has tensor-parallel style {style!r}; known styles: "
                                      f"{', '.join(STYLES + tuple(FUSED_PARTS))}")
        rules.append((module_regex(module), split))
    # the logits projection reads lm_head's weight, or (tied) the embedding table under either name
    logits = (f"{adapter.lm_head}.weight", f"{adapter.text_model}.{adapter.embed}.weight")
    return TensorParallelPlan(size, tuple(rules), logits, expert_parallel=expert_parallel and size > 1)
