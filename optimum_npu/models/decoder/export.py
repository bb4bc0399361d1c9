"""Compile a decoder-only HF model into an NPU artifact: one prefill graph and one graph per decode batch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, PreTrainedModel

from optimum_npu.compile.artifact import graph_path
from optimum_npu.compile.artifact_write import write_atomically
from optimum_npu.compile.capture import capture, capture_form
from optimum_npu.compile.pipeline import run_pipeline
from optimum_npu.compile.tensor_parallel_plan import TensorParallelPlan
from optimum_npu.compile.weights import save_weights
from optimum_npu.device.spec import resolve_spec
from optimum_npu.models.adapters.tp_plan import decoder_tp_plan
from optimum_npu.models.decoder.memory_plan import cache_shapes, check_fits, suggest_fit
from optimum_npu.models.decoder.npu_config import NPUDecoderConfig
from optimum_npu.models.decoder.prequantized import Prequantized
from optimum_npu.models.decoder.wrapper import HF_PREFIX, StaticDecoder, attention_layouts
from optimum_npu.models.model_config import DecoderModelConfig
from optimum_npu.models.registry import Architecture, adapter_for
from optimum_npu.schema import ARTIFACT_FORMAT_VERSION, GRAPH_DIR, NPU_CONFIG_FILE, weights_file
from optimum_npu.version import __version__

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "chat_template.jinja", "added_tokens.json")
INPUT_NAMES = ["input_ids", "positions", "block_table", "slots", "logits_index"]


def tensor_parallel_plan(hf_config, size: int, text_model: str | None = None, expert_parallel_size: int = 1,
                         expert_tensor_parallel: bool = False) -> TensorParallelPlan:
    """The split of the decoder's weights over ``size`` devices, as the architecture's adapter declares it
    (with ``expert_parallel_size`` = ``size``, the experts spread over them too; with ``expert_tensor_parallel``,
    each expert's intermediate size split over them).

    ``text_model`` is accepted for callers of the former signature; the adapter names the text model.
    """
    return decoder_tp_plan(adapter_for(hf_config), DecoderModelConfig.from_hf(hf_config), size,
                           expert_parallel=expert_parallel_size > 1, expert_tensor_parallel=expert_tensor_parallel)


def graph_names(config: NPUDecoderConfig) -> list[str]:
    return list(config.buckets())


def extra_inputs(arch: Architecture, prefill: bool, deepstack_layers: int = 0) -> list[str]:
    """Inputs beyond ``INPUT_NAMES`` and the caches: M-RoPE positions, and visual embeddings at prefill
    (with DeepStack features when the model has ``deepstack_layers``)."""
    if not arch.mrope:
        return []
    if not prefill:
        return ["rope_positions"]
    return ["rope_positions", "visual_embeds", "visual_mask"] + (["deepstack_embeds"] if deepstack_layers else [])


def example_inputs(config: NPUDecoderConfig, model: DecoderModelConfig, batch: int, seq: int, dtype: torch.dtype,
                   device: torch.device | str = "cpu", extras: list[str] = (), all_logits: bool = False):
    """Zero-filled inputs with the static shapes of one graph (on ``meta`` they take no memory); ``all_logits``:
    ``logits_index`` names every position ([B, S]) instead of one per row ([B])."""
    kv_cache = [torch.zeros(shape, dtype=dtype, device=device) for shape in cache_shapes(model, config)
                for _ in range(2)]
    extra = {"rope_positions": torch.zeros(3, batch, seq, dtype=torch.long, device=device),
             "visual_embeds": torch.zeros(batch, seq, model.hidden_size, dtype=dtype, device=device),
             "visual_mask": torch.zeros(batch, seq, dtype=torch.bool, device=device),
             "deepstack_embeds": torch.zeros(model.deepstack_layers, batch, seq, model.hidden_size, dtype=dtype,
                                             device=device)}
    return (
        torch.zeros(batch, seq, dtype=torch.long, device=device),
        torch.zeros(batch, seq, dtype=torch.long, device=device),
        torch.zeros(batch, config.blocks_per_sequence, dtype=torch.int32, device=device),
        torch.zeros(batch, dtype=torch.long, device=device),
        torch.zeros((batch, seq) if all_logits else (batch,), dtype=torch.long, device=device),
        kv_cache,
        *[extra[name] for name in extras],
    )


def capture_graphs(hf_model: PreTrainedModel, arch: Architecture, config: NPUDecoderConfig,
                   names: list[str] | None = None, progress: bool = True):
    """Captures the named graphs (default: all of ``config``); returns (graphs, weights by name).

    Works on a weightless model on the ``meta`` device too: the graphs and their costs
    are the same, only the weights are absent (that is how the planner sizes large models).
    """
    dtype = getattr(torch, config.dtype)
    with capture_form(hf_model, dtype) as model:
        return _capture(model, arch, config, names, progress)


def _capture(hf_model: PreTrainedModel, arch: Architecture, config: NPUDecoderConfig, names: list[str] | None,
             progress: bool):
    model_config = DecoderModelConfig.from_hf(hf_model.config)
    dtype = getattr(torch, config.dtype)
    device = next(hf_model.parameters()).device
    layouts = attention_layouts(model_config, arch, config.max_seq_len, config.partition_len)
    wrapper = StaticDecoder(hf_model, model_config, arch, layouts)
    kv_names = [f"{kind}_cache_{layer}" for layer in range(model_config.num_layers) for kind in ("key", "value")]
    graphs, weights = {}, {}
    for name in tqdm(names or graph_names(config), desc="compiling graphs", unit="graph", disable=not progress):
        bucket = config.buckets()[name]
        batch, seq = bucket.batch, bucket.tokens
        extras = extra_inputs(arch, prefill=bucket.kind in ("prefill", "prefill_all"),
                              deepstack_layers=model_config.deepstack_layers)
        args = example_inputs(config, model_config, batch, seq, dtype, device, extras,
                              all_logits=bucket.kind == "prefill_all")
        kinds = ["input"] * len(INPUT_NAMES) + ["kv_cache"] * len(kv_names) + ["input"] * len(extras)
        graph, graph_weights = capture(wrapper, args, name, INPUT_NAMES + kv_names + extras, kinds, HF_PREFIX,
                                       attributes=bucket.attributes())
        graphs[name] = graph
        weights.update(graph_weights)
    return graphs, weights


def compile_decoder(
    hf_model: PreTrainedModel,
    arch: Architecture,
    config: NPUDecoderConfig,
    target: Path,
    tokenizer_source: Path | None = None,
    progress: bool = True,
    prequantized: Prequantized | None = None,
) -> Path:
    """Runs the compile pipeline (``compile/pipeline.py``) on every graph of ``config`` and writes the
    artifact atomically to ``target``; refuses, before writing anything, graphs whose memory plan does
    not fit one device.

    ``config`` must already be resolved against the model (``NPUDecoderConfig.resolve``); ``prequantized``: the
    quantized tensors of a pre-quantized checkpoint, compiled as they are (``prequantized.py``).
    """
    model_config = DecoderModelConfig.from_hf(hf_model.config)
    spec = resolve_spec(config.npu)
    names = graph_names(config)
    plan = tensor_parallel_plan(hf_model.config, config.tensor_parallel_size, arch.text_model,
                                config.expert_parallel_size, config.expert_tensor_parallel)
    compiled = run_pipeline(lambda: capture_graphs(hf_model, arch, config, names, progress), plan,
                            quantization=config.quantization, given=prequantized.tensors if prequantized else None)
    if compiled.memory.total > spec.dram_bytes:
        check_fits(compiled.memory.request(), spec, owner=f"{model_config.architecture} (compile check)",
                   suggestion=suggest_fit(model_config, config, spec))
    graphs, rank_weights = compiled.graphs, compiled.rank_weights

    def fill(tmp: Path) -> None:
        (tmp / GRAPH_DIR).mkdir()
        for name, graph in graphs.items():
            graph_path(tmp, name).write_text(graph.to_json())
        for rank, shard in enumerate(rank_weights):
            save_weights(tmp / weights_file(rank, plan.size), shard)
        hf_model.config.save_pretrained(tmp)
        generation_config = hf_model.generation_config or GenerationConfig.from_model_config(hf_model.config)
        generation_config.save_pretrained(tmp)
        if tokenizer_source is not None:
            for file_name in TOKENIZER_FILES:
                if (Path(tokenizer_source) / file_name).is_file():
                    shutil.copy2(Path(tokenizer_source) / file_name, tmp / file_name)
        document = {
            "architecture": model_config.architecture,
            "family": arch.family,
            **config.to_dict(),
            "graphs": names,
            "npu_spec": spec.to_dict(),
            "library_version": __version__,
            "format_version": ARTIFACT_FORMAT_VERSION,
            "torch_version": torch.__version__,
        }
        (tmp / NPU_CONFIG_FILE).write_text(json.dumps(document, indent=1))

    return write_atomically(target, fill)
