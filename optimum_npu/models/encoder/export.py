"""Compile an HF encoder into an artifact: one graph per (batch size, length) bucket, weights once.

Layout: ``npu_config.json`` (family, architecture, task, outputs, inputs, knobs, graph list, spec), ``config.json``,
``generation_config.json``, tokenizer / image processor files, ``model.safetensors``,
``graphs/encoder_b<B>_s<S>.graph.json`` (text) or ``graphs/image_b<B>_px<P>.graph.json`` (images).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig, PreTrainedModel

from optimum_npu.compile.artifact import graph_path
from optimum_npu.compile.artifact_write import write_atomically
from optimum_npu.compile.capture import capture, capture_form
from optimum_npu.compile.pipeline import run_pipeline
from optimum_npu.compile.weights import save_weights
from optimum_npu.device.spec import resolve_spec
from optimum_npu.models.encoder.modalities import FEEDS
from optimum_npu.models.encoder.files import ENCODER_FILES
from optimum_npu.models.encoder.npu_config import NPUEncoderConfig
from optimum_npu.models.encoder.tasks import EncoderTask
from optimum_npu.models.encoder.tp_plan import encoder_tp_plan
from optimum_npu.models.encoder.wrapper import WRAPPER_PREFIX, capture_attention
from optimum_npu.schema import ARTIFACT_FORMAT_VERSION, GRAPH_DIR, NPU_CONFIG_FILE, Graph, weights_file
from optimum_npu.version import __version__


def artifact_config(hf_model: PreTrainedModel) -> Any:
    """The HF config an encoder artifact stores: the model's, with ``architectures`` naming its class."""
    config = copy.deepcopy(hf_model.config)
    config.architectures = [type(hf_model).__name__]
    return config


def capture_encoder_graphs(hf_model: PreTrainedModel, task: EncoderTask, config: NPUEncoderConfig
                           ) -> tuple[dict[str, Graph], dict[str, torch.Tensor], tuple[str, ...]]:
    """One graph per bucket of ``config``; returns (graphs, weights by checkpoint name, output names)."""
    dtype = getattr(torch, config.dtype)
    feed = FEEDS[task.modality].for_model(task, None, dtype, hf_model)
    names = list(feed.names)
    with capture_form(hf_model, dtype) as model, capture_attention(model):
        wrapper = feed.wrap(model, task.outputs)
        smallest = min(config.buckets(), key=lambda b: (b.tokens, b.batch))
        outputs = wrapper.present(feed.example(dataclasses.replace(smallest, batch=1)), task.outputs)
        wrapper.outputs = outputs
        graphs, weights = {}, {}
        for bucket in config.buckets():
            graph, graph_weights = capture(wrapper, feed.example(bucket), bucket.name, names, ["input"] * len(names),
                                           WRAPPER_PREFIX, attributes=bucket.attributes())
            graphs[bucket.name] = graph
            weights.update(graph_weights)
    return graphs, weights, outputs


def compile_encoder(hf_model: PreTrainedModel, architecture: str, task: EncoderTask, config: NPUEncoderConfig,
                    target: Path, tokenizer_dir: Path | None = None) -> Path:
    """Writes the artifact of ``hf_model`` atomically to ``target`` (``config`` already resolved)."""
    found: dict[str, tuple[str, ...]] = {}

    def build():
        graphs, weights, found["outputs"] = capture_encoder_graphs(hf_model, task, config)
        found["inputs"] = tuple(spec.name for spec in next(iter(graphs.values())).inputs if spec.kind == "input")
        return graphs, weights

    def fill(root: Path) -> None:
        plan = encoder_tp_plan(hf_model.config.model_type, config.tensor_parallel_size)
        compiled = run_pipeline(build, plan)
        (root / GRAPH_DIR).mkdir(parents=True)
        for name, graph in compiled.graphs.items():
            graph_path(root, name).write_text(graph.to_json())
        for rank, shard in enumerate(compiled.rank_weights):
            save_weights(root / weights_file(rank, config.tensor_parallel_size), shard)
        artifact_config(hf_model).save_pretrained(root)
        GenerationConfig.from_model_config(hf_model.config).save_pretrained(root)
        for name in ENCODER_FILES if tokenizer_dir else ():
            if (Path(tokenizer_dir) / name).is_file():
                shutil.copy2(Path(tokenizer_dir) / name, root / name)
        document = {"architecture": architecture, "family": "encoder", "task": task.name,
                    "outputs": list(found["outputs"]), "inputs": list(found["inputs"]), **config.to_dict(),
                    "graphs": list(compiled.graphs), "npu_spec": resolve_spec(config.npu).to_dict(),
                    "library_version": __version__, "format_version": ARTIFACT_FORMAT_VERSION,
                    "torch_version": torch.__version__}
        (root / NPU_CONFIG_FILE).write_text(json.dumps(document, indent=1))

    return write_atomically(target, fill)
