"""Compile the visual encoder of a VLM: one graph per ``max_seq_len`` bucket, weights once.

The submodule directory ``compile_visual`` writes (the parent artifact adds the manifest)::

    visual_config.json            the normalised vision config, the knobs, the graph list
    model.safetensors             the vision tower's weights, named relative to it
    graphs/visual_<S>.graph.json  one graph per bucket of S patches
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

from optimum_npu.compile.artifact import graph_path
from optimum_npu.compile.capture import capture, capture_form
from optimum_npu.compile.pipeline import run_pipeline
from optimum_npu.compile.weights import save_weights
from optimum_npu.models.vlm.visual_config import NPUVisualConfig, VisualModelConfig, bucket_graph_name, visual_bucket
from optimum_npu.models.vlm.visual_wrapper import KIND_INPUTS, WRAPPERS
from optimum_npu.schema import ARTIFACT_FORMAT_VERSION, GRAPH_DIR, Graph, WEIGHTS_FILE

VISUAL_CONFIG_FILE = "visual_config.json"
#: Prefix of the vision tower inside the wrapper; stripped so weights are named as in the tower.
WRAPPER_PREFIX = "visual."


def find_visual(hf_model: nn.Module) -> tuple[nn.Module, str]:
    """The vision tower of an HF VLM and its prefix in the checkpoint (``model.visual.``)."""
    for prefix in ("model.visual", "visual"):
        module = hf_model
        for part in prefix.split("."):
            module = getattr(module, part, None)
        if module is not None:
            return module, prefix + "."
    raise ValueError(f"{type(hf_model).__name__} has no vision tower at model.visual or visual; "
                     "pass a Qwen2-VL, Qwen2.5-VL or Qwen3-VL model")


def example_inputs(model: VisualModelConfig, bucket: int, dtype: torch.dtype, device: torch.device | str = "cpu"):
    """Zero-filled inputs of the bucket graph (on ``meta`` they take no memory)."""
    args = [torch.zeros(bucket, model.patch_dim, dtype=dtype, device=device),
            torch.zeros(bucket, 2, dtype=torch.long, device=device),
            torch.zeros(bucket, dtype=torch.long, device=device)]
    if model.kind == "qwen2_5_vl":
        args.append(torch.zeros(bucket, dtype=torch.long, device=device))
    if model.kind == "qwen3_vl":
        args += [torch.zeros(bucket, 4, dtype=torch.long, device=device),
                 torch.zeros(bucket, 4, dtype=torch.float32, device=device)]
    return tuple(args)


def capture_visual_graphs(visual: nn.Module, model: VisualModelConfig, config: NPUVisualConfig,
                          buckets: list[int] | None = None) -> tuple[dict[str, Graph], dict[str, torch.Tensor]]:
    """Captures one graph per bucket (default: all of ``config``); returns (graphs, weights by name).

    Works on a vision tower on the ``meta`` device too (for cost estimates without weights).
    """
    config.check_model(model)
    with capture_form(visual, getattr(torch, config.dtype)) as tower:
        return _capture(tower, model, config, buckets)


def _capture(visual: nn.Module, model: VisualModelConfig, config: NPUVisualConfig, buckets: list[int] | None):
    dtype = getattr(torch, config.dtype)
    device = next(visual.parameters()).device
    wrapper = WRAPPERS[model.kind](visual, model)
    names = KIND_INPUTS[model.kind]
    graphs, weights = {}, {}
    for bucket in buckets or list(config.max_seq_len):
        args = example_inputs(model, bucket, dtype, device)
        name = bucket_graph_name(bucket)
        graph, graph_weights = capture(wrapper, args, name, names, ["input"] * len(args),
                                       WRAPPER_PREFIX, attributes=visual_bucket(bucket).attributes())
        graphs[name] = graph
        weights.update(graph_weights)
    return graphs, weights


def compile_visual(hf_vlm_model: nn.Module, visual_config: NPUVisualConfig | dict | int | list,
                   target_dir: str | Path) -> None:
    """Captures the visual encoder of ``hf_vlm_model`` per bucket and writes its submodule directory.

    Args:
        hf_vlm_model: an HF Qwen2-VL / Qwen2.5-VL / Qwen3-VL model (``*ForConditionalGeneration`` or ``*Model``).
        visual_config: the visual knobs (``NPUVisualConfig``, a dict of its fields, or the buckets).
        target_dir: the directory to fill (created if missing); no manifest is written.
    """
    config = NPUVisualConfig.coerce(visual_config)
    model = VisualModelConfig.from_hf(hf_vlm_model.config)
    visual, hf_prefix = find_visual(hf_vlm_model)
    compiled = run_pipeline(lambda: capture_visual_graphs(visual, model, config), None)  # one device
    graphs, weights = compiled.graphs, compiled.rank_weights[0]
    target = Path(target_dir)
    (target / GRAPH_DIR).mkdir(parents=True, exist_ok=True)
    for name, graph in graphs.items():
        graph_path(target, name).write_text(graph.to_json())
    save_weights(target / WEIGHTS_FILE, weights)
    document = {"model": dataclasses.asdict(model), **config.to_dict(), "graphs": list(graphs),
                "hf_prefix": hf_prefix, "format_version": ARTIFACT_FORMAT_VERSION}
    (target / VISUAL_CONFIG_FILE).write_text(json.dumps(document, indent=1))
