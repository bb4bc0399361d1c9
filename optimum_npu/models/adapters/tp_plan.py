"""An adapter's ``tp_plan`` (styles by module pattern) resolved into the compiler's ``TensorParallelPlan``."""

from __future__ import annotations

from typing import Callable

from optimum_npu.compile.tensor_parallel_plan import (STYLES, TensorParallelError, TensorParallelPlan, WeightSplit,
                                                      module_regex)
from optimum_npu.models.adapters.spec import DecoderAdapter

#: Fused column-parallel styles -> the full extent of each part, from the normalised model config.
FUSED_PARTS: dict[str, Callable] = {
    "colwise_qkv": lambda m: (m.num_heads * m.head_dim, m.num_kv_heads * m.head_dim, m.num_kv_heads * m.head_dim),
    "colwise_gate_up": lambda m: (m.intermediate_size, m.intermediate_size),
}


def expert_intermediate_rules(adapter: DecoderAdapter, model, experts: str) -> list[tuple[str, WeightSplit]]:
    """Rules cutting every routed expert's intermediate size (``experts``: the module pattern, text model included):
    gate/up by output features (each of gate and up in its slice, or contiguous when they interleave), down by
    input features, the down bias kept once (rank 0)."""
    layout = adapter.moe
    inner = (model.moe_intermediate_size,) * 2
    gate_up = WeightSplit("colwise", 2 if layout.transposed else 1, () if layout.interleaved else inner)
    rules = [("gate_up_proj", gate_up), ("down_proj", WeightSplit("rowwise", in_dim=1 if layout.transposed else 2))]
    if layout.biases:
        gate_up_bias, down_bias = layout.biases
        rules += [(gate_up_bias, WeightSplit("colwise", 1, () if layout.interleaved else inner)),
                  (down_bias, WeightSplit("rowwise_bias"))]
    return [(module_regex(f"{experts}.{name}"), split) for name, split in rules]


def decoder_tp_plan(adapter: DecoderAdapter, model, size: int, expert_parallel: bool = False,
                    expert_tensor_parallel: bool = False) -> TensorParallelPlan:
    """The split of every weight the adapter declares, over ``size`` devices.

    Args:
        adapter: the architecture's adapter (module patterns relative to its text model).
        model: the ``DecoderModelConfig`` (sizes of fused parts).
        size: tensor-parallel size.
        expert_parallel: spread the experts over the ``size`` devices (their stacked weights are cut along
            the expert dimension).
        expert_tensor_parallel: split every routed expert's intermediate size over the devices instead
            (``expert_intermediate_rules``); without either the routed experts are replicated.
    Raises:
        TensorParallelError: a style outside ``STYLES`` and ``FUSED_PARTS``, naming the module.
    """
    out_dim = 1 if adapter.linear == "conv1d" else 0  # Conv1D weights are [in, out]
    rules = []
    experts = f"{adapter.layers}.*.{adapter.mlp.module}.{adapter.moe.experts}" if adapter.moe else None
    if expert_parallel and size > 1:
        rules.append((module_regex(f"{adapter.text_model}.{experts}"), WeightSplit("colwise", 0)))  # [E/size, ...]
    elif expert_tensor_parallel and size > 1 and experts is not None:
        rules += expert_intermediate_rules(adapter, model, f"{adapter.text_model}.{experts}")
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
