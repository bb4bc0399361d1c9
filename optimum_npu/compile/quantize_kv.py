"""The KV-cache half of the quantization pass: fp8 caches with one scale per token and head.

Every cache an attention kernel reads (``k_cache`` / ``v_cache`` of ``npu.paged_attention``, ``k_ring`` /
``v_ring`` of ``npu.sliding_window_attention``) becomes a float8 e4m3 input, and gets a float32 scale
input ``<cache>_scale`` of the cache's shape without its head dimension ([blocks, kv_heads, block_size]),
passed to the kernel as ``k_scale`` / ``v_scale``. The kernels quantize what they write and dequantise
what they read (``device/kernels/kv_quant.py``). Scales are state like the caches: kind ``kv_cache``,
mutated in place, split by key/value heads under tensor parallelism.
"""

from __future__ import annotations

import dataclasses

from optimum_npu.compile.quantization_config import QuantizationConfig
from optimum_npu.device.ops import argument
from optimum_npu.schema import Graph, TensorSpec

#: Attention kernels -> (their cache arguments, the scale argument of each).
KV_ARGUMENTS = {"npu.paged_attention.default": (("k_cache", "k_scale"), ("v_cache", "v_scale")),
                "npu.sliding_window_attention.default": (("k_ring", "k_scale"), ("v_ring", "v_scale"))}
FP8 = "float8_e4m3fn"
SCALE_DTYPE = "float32"


def scale_name(cache: str) -> str:
    """The scale input of a cache input (``key_cache_0`` -> ``key_cache_0_scale``)."""
    return f"{cache}_scale"


def quantize_kv_graphs(graphs: dict[str, Graph], config: QuantizationConfig | None) -> dict[str, Graph]:
    """The graphs with fp8 caches when ``config.kv_cache == "fp8"`` (module docstring); else unchanged."""
    if config is None or config.kv_cache is None:
        return graphs
    return {name: _with_fp8_caches(graph) for name, graph in graphs.items()}


def _with_fp8_caches(graph: Graph) -> Graph:
    specs = {spec.name: spec for spec in graph.inputs}
    scales: dict[str, TensorSpec] = {}
    nodes = []
    for node in graph.nodes:
        if node.op not in KV_ARGUMENTS:
            nodes.append(node)
            continue
        kwargs = dict(node.kwargs)
        for cache_argument, scale_argument in KV_ARGUMENTS[node.op]:
            cache = argument(node, cache_argument)["ref"]
            shape = specs[cache].shape[:-1]
            scales[cache] = TensorSpec(scale_name(cache), "kv_cache", shape, SCALE_DTYPE)
            kwargs[scale_argument] = {"ref": scale_name(cache)}
        nodes.append(dataclasses.replace(node, kwargs=kwargs))
    inputs = []
    for spec in graph.inputs:
        inputs.append(dataclasses.replace(spec, dtype=FP8) if spec.name in scales else spec)
    inputs += list(scales.values())
    mutated = graph.mutated_inputs + tuple(spec.name for spec in scales.values())
    result = dataclasses.replace(graph, inputs=tuple(inputs), nodes=tuple(nodes), mutated_inputs=mutated)
    result.validate()
    return result
