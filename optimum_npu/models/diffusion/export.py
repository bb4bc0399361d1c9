"""Compile a Diffusers pipeline into one artifact: a folder per component, one manifest for the whole.

Layout::

    npu_config.json            family, pipeline class, bucket knobs, component folders, target spec, versions
    config.json                the pipeline's model index (class, components)
    scheduler/scheduler_config.json, tokenizer*/...
    <component>/npu_config.json  kind, HF class, graphs, inputs
    <component>/config.json      the component's own config
    <component>/model.safetensors  its weights, once (the VAE's halves each store what their graphs read)
    <component>/graphs/<bucket>.graph.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from optimum_npu.compile.artifact import graph_path, write_atomically
from optimum_npu.compile.capture import capture, capture_form
from optimum_npu.compile.pipeline import run_pipeline
from optimum_npu.compile.weights import save_weights
from optimum_npu.device.spec import resolve_spec
from optimum_npu.models.diffusion.capture_mode import capture_mode
from optimum_npu.models.diffusion.components import WRAPPER_PREFIX, WRAPPERS
from optimum_npu.models.diffusion.npu_config import NPUDiffusionConfig
from optimum_npu.models.diffusion.plan import ComponentPlan, component_plans
from optimum_npu.models.diffusion.parallel import capture_attention, component_split
from optimum_npu.schema import ARTIFACT_FORMAT_VERSION, GRAPH_DIR, NPU_CONFIG_FILE, Graph, weights_file
from optimum_npu.version import __version__

#: Tokenizer attributes a pipeline may have (each saved in the folder of its name).
TOKENIZERS = ("tokenizer", "tokenizer_2", "tokenizer_3")
#: Boolean options of the Diffusers pipelines' own configs that an artifact keeps.
PIPELINE_OPTIONS = ("requires_safety_checker", "force_zeros_for_empty_prompt", "requires_aesthetics_score")


def capture_component(plan: ComponentPlan, dtype: torch.dtype) -> tuple[dict[str, Graph], dict[str, torch.Tensor]]:
    """One graph per bucket of ``plan``; returns (graphs, weights by checkpoint name)."""
    graphs, weights = {}, {}
    with capture_form(plan.module, dtype) as module, capture_mode(module), capture_attention(plan.kind, module):
        wrapper = WRAPPERS[plan.kind](module)
        for bucket, shapes in plan.buckets:
            graph, graph_weights = capture(wrapper, plan.example_args(shapes, dtype), bucket.name, list(plan.inputs),
                                           ["input"] * len(plan.inputs), WRAPPER_PREFIX,
                                           attributes=bucket.attributes())
            graphs[bucket.name] = graph
            weights.update(graph_weights)
    return graphs, weights


def _write_component(root: Path, plan: ComponentPlan, dtype: torch.dtype) -> list[str]:
    folder = root / plan.folder
    size = plan.tensor_parallel_size
    compiled = run_pipeline(lambda: capture_component(plan, dtype), component_split(plan.kind, plan.module, size))
    (folder / GRAPH_DIR).mkdir(parents=True)
    for name, graph in compiled.graphs.items():
        graph_path(folder, name).write_text(graph.to_json())
    for rank, weights in enumerate(compiled.rank_weights):
        save_weights(folder / weights_file(rank, size), weights)
    plan.module.config.save_pretrained(folder) if hasattr(plan.module.config, "save_pretrained") \
        else plan.module.save_config(folder)
    document = {"kind": plan.kind, "class_name": type(plan.module).__name__, "inputs": list(plan.inputs),
                "graphs": list(compiled.graphs), "tensor_parallel_size": size}
    (folder / NPU_CONFIG_FILE).write_text(json.dumps(document, indent=1))
    return list(compiled.graphs)


def compile_pipeline(pipe: Any, pipeline_name: str, config: NPUDiffusionConfig, with_vae_encoder: bool,
                     target: Path) -> Path:
    """Writes the artifact of the eager pipeline ``pipe`` atomically to ``target`` (``config`` resolved)."""
    dtype = getattr(torch, config.dtype)
    plans = component_plans(pipe, config, with_vae_encoder)

    def fill(root: Path) -> None:
        for plan in plans:
            _write_component(root, plan, dtype)
        for name in TOKENIZERS:
            if getattr(pipe, name, None) is not None:
                getattr(pipe, name).save_pretrained(root / name)
        pipe.scheduler.save_config(root / "scheduler")
        index = {"_class_name": pipeline_name, "components": {p.folder: p.kind for p in plans},
                 "scheduler": type(pipe.scheduler).__name__,
                 "options": {k: bool(pipe.config[k]) for k in PIPELINE_OPTIONS if k in pipe.config}}
        (root / "config.json").write_text(json.dumps(index, indent=1))
        document = {"family": "diffusion", "architecture": pipeline_name, "pipeline": pipeline_name,
                    **config.to_dict(),
                    "submodules": {p.folder: p.folder for p in plans},
                    "components": {p.folder: p.kind for p in plans},
                    "tokenizers": [n for n in TOKENIZERS if getattr(pipe, n, None) is not None],
                    "npu_spec": resolve_spec(config.npu).to_dict(), "library_version": __version__,
                    "format_version": ARTIFACT_FORMAT_VERSION, "torch_version": torch.__version__}
        (root / NPU_CONFIG_FILE).write_text(json.dumps(document, indent=1))

    return write_atomically(target, fill)
