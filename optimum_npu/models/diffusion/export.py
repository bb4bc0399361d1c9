"""Compile a Diffusers pipeline into one artifact: a folder per component, one manifest for the whole.

Layout::

    npu_config.json            family, pipeline class, bucket knobs, component folders, target spec, versions
    config.json                the pipeline's model index (class, components)
    scheduler/scheduler_config.json, tokenizer*/...
    <component>/npu_config.json  its family, HF class, its own config, inputs per graph kind, graphs, target
    <component>/config.json      the component's own config
    <component>/model.safetensors  its weights, once (the VAE's halves each store what their graphs read)
    <component>/graphs/<bucket>.graph.json
    <component>/npu_manifest.json  its own manifest: the folder loads alone as its component class

A component compiled alone (``compile_component``) is one such folder at the root.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from optimum_npu.compile.artifact import graph_path, read_manifest, write_manifest
from optimum_npu.compile.artifact_write import copy_listed, write_atomically
from optimum_npu.compile.capture import capture, capture_form
from optimum_npu.compile.pipeline import run_pipeline
from optimum_npu.compile.weights import save_weights
from optimum_npu.device.spec import resolve_spec
from optimum_npu.models.diffusion.capture_mode import capture_mode
from optimum_npu.models.diffusion import component_plan
from optimum_npu.models.diffusion.component_config import ComponentConfig
from optimum_npu.models.diffusion.components import KIND_FAMILY, WRAPPER_PREFIX, WRAPPERS
from optimum_npu.models.diffusion.npu_config import NPUDiffusionConfig
from optimum_npu.models.diffusion.parallel import capture_attention, component_split
from optimum_npu.models.diffusion.plan import ComponentPlan, folder_plans
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


def write_component(folder: Path, plans: list[ComponentPlan], config: ComponentConfig, dtype: torch.dtype,
                    own_manifest: bool) -> list[str]:
    """Compiles one component (its plans: one, or a VAE's two halves) into ``folder``: graphs, weights once,
    ``config.json``, ``npu_config.json`` (its family, HF class, inputs per graph kind, its own config, the
    target) and, inside a pipeline (``own_manifest``), its own manifest, so the folder also loads alone."""
    size, module = plans[0].tensor_parallel_size, plans[0].module

    def capture_all() -> tuple[dict[str, Graph], dict[str, torch.Tensor]]:
        graphs, weights = {}, {}
        for plan in plans:
            plan_graphs, plan_weights = capture_component(plan, dtype)
            graphs.update(plan_graphs)
            weights.update(plan_weights)
        return graphs, weights

    compiled = run_pipeline(capture_all, component_split(plans[0].kind, module, size))
    (folder / GRAPH_DIR).mkdir(parents=True)
    for name, graph in compiled.graphs.items():
        graph_path(folder, name).write_text(graph.to_json())
    for rank, weights in enumerate(compiled.rank_weights):
        save_weights(folder / weights_file(rank, size), weights)
    module.config.save_pretrained(folder) if hasattr(module.config, "save_pretrained") else module.save_config(folder)
    document = {"family": KIND_FAMILY[plans[0].kind], "architecture": type(module).__name__,
                "class_name": type(module).__name__, **config.to_dict(),
                "inputs": {plan.kind: list(plan.inputs) for plan in plans}, "graphs": list(compiled.graphs),
                "tensor_parallel_size": size, "npu_spec": resolve_spec(config.npu).to_dict(),
                "library_version": __version__, "format_version": ARTIFACT_FORMAT_VERSION,
                "torch_version": torch.__version__}
    (folder / NPU_CONFIG_FILE).write_text(json.dumps(document, indent=1))
    if own_manifest:
        write_manifest(folder)
    return list(compiled.graphs)


def compile_component(module: Any, kind: str, config: ComponentConfig, target: Path) -> Path:
    """Writes the artifact of one eager component (``config`` resolved) atomically to ``target``."""
    return write_atomically(target, lambda root: write_component(
        root, component_plan.plans(kind, kind, module, config), config, getattr(torch, config.dtype), False))


def compile_pipeline(pipe: Any, pipeline_name: str, config: NPUDiffusionConfig, with_vae_encoder: bool,
                     target: Path, precompiled: dict[str, Path] | None = None) -> Path:
    """Writes the artifact of the eager pipeline ``pipe`` atomically to ``target`` (``config`` resolved);
    ``precompiled``: component folders compiled alone (already checked), copied instead of compiled."""
    precompiled = precompiled or {}
    dtype = getattr(torch, config.dtype)
    folders = folder_plans(pipe, config, with_vae_encoder)
    plans = [plan for _, folder in folders.values() for plan in folder]

    def fill(root: Path) -> None:
        for folder, (folder_config, members) in folders.items():
            if folder in precompiled:
                copy_listed(precompiled[folder], root / folder, read_manifest(precompiled[folder]))
            else:
                write_component(root / folder, members, folder_config, dtype, own_manifest=True)
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
