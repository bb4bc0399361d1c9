"""Compile an encoder-decoder HF model into an artifact: encoder bucket graphs, the decoder prompt graph and the
decode graphs, weights once (shared embeddings stay one tensor).

Layout: ``npu_config.json`` (family, architecture, knobs, graph list, spec, alignment heads), ``config.json``,
``generation_config.json``, tokenizer / feature-extractor files, ``model.safetensors``, ``graphs/<name>.graph.json``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Iterator

import torch
from transformers import GenerationConfig, PreTrainedModel

from optimum_npu.compile.artifact import graph_path
from optimum_npu.compile.artifact_write import write_atomically
from optimum_npu.compile.capture import capture, capture_form
from optimum_npu.compile.pipeline import run_pipeline
from optimum_npu.compile.weights import save_weights
from optimum_npu.device.spec import resolve_spec
from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.models.encoder.wrapper import capture_attention
from optimum_npu.models.seq2seq.architectures import Seq2SeqModelConfig
from optimum_npu.models.seq2seq.npu_config import DECODE_KIND, ENCODER_KIND, NPUSeq2SeqConfig
from optimum_npu.models.seq2seq.tp_plan import REPLICATED_STATES, seq2seq_tp_plan
from optimum_npu.models.seq2seq.wrapper import (WRAPPER_PREFIX, StaticSeq2SeqDecoder, StaticSeq2SeqEncoder,
                                                cache_names, heads_without_counts)
from optimum_npu.schema import ARTIFACT_FORMAT_VERSION, GRAPH_DIR, NPU_CONFIG_FILE, Graph, weights_file
from optimum_npu.version import __version__

#: Tokenizer and feature-extractor files shipped with an artifact when present.
SHIPPED_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "spiece.model", "vocab.json",
                 "merges.txt", "added_tokens.json", "normalizer.json", "preprocessor_config.json",
                 "processor_config.json")
DECODER_INPUTS = ["input_ids", "positions", "block_table", "slots", "logits_index"]
PREFILL_EXTRAS = ["encoder_hidden", "encoder_mask"]


def cross_len(model: Seq2SeqModelConfig, config: NPUSeq2SeqConfig) -> int:
    """Encoder positions a cross-attention slot holds: Whisper's encoder output, else the largest bucket."""
    return model.cross_len or config.encoder_seq_lens[-1]


def encoder_inputs(model: Seq2SeqModelConfig) -> list[str]:
    return ["input_features"] if model.audio_frames else ["input_ids", "attention_bias"]


def cache_shapes(model: Seq2SeqModelConfig, config: NPUSeq2SeqConfig,
                 per_rank: bool = False) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name -> (shape, dtype) of every device cache (``wrapper.cache_names`` order); ``per_rank``: as one
    tensor-parallel rank holds them (1/N of the heads; the encoder mask whole)."""
    heads = model.heads // config.tensor_parallel_size if per_rank else model.heads
    pool = (config.kvcache_num_blocks, heads, config.kvcache_block_size, model.head_dim)
    cross = (config.batch_size, heads, cross_len(model, config), model.head_dim)
    shapes = {}
    for name in cache_names(model.num_layers):
        shapes[name] = ((config.batch_size, cross[2]), "float32") if name in REPLICATED_STATES else (
            (pool if "cache" in name else cross), config.dtype)
    return shapes


def _decoder_args(model: Seq2SeqModelConfig, config: NPUSeq2SeqConfig, batch: int, tokens: int, prefill: bool):
    dtype = getattr(torch, config.dtype)
    caches = [torch.zeros(shape, dtype=getattr(torch, d)) for shape, d in cache_shapes(model, config).values()]
    args = [torch.zeros(batch, tokens, dtype=torch.long), torch.zeros(batch, tokens, dtype=torch.long),
            torch.zeros(batch, config.blocks_per_sequence, dtype=torch.int32), torch.zeros(batch, dtype=torch.long),
            torch.zeros(batch, dtype=torch.long), caches]
    if prefill:
        length = cross_len(model, config)
        args += [torch.zeros(batch, length, model.hidden_size, dtype=dtype), torch.zeros(batch, length)]
    return tuple(args)


def _encoder_args(model: Seq2SeqModelConfig, dtype: torch.dtype, batch: int, tokens: int):
    if model.audio_frames:
        return (torch.zeros(batch, model.num_mel_bins, tokens, dtype=dtype),)
    return torch.zeros(batch, tokens, dtype=torch.long), torch.zeros(batch, 1, 1, tokens, dtype=dtype)


@contextlib.contextmanager
def without_functional_dropout() -> Iterator[None]:
    """``nn.functional.dropout`` as the identity while capturing (BART and Whisper call it directly in their layers;
    inference never drops, and the allow-list has no random operator)."""
    original = torch.nn.functional.dropout
    torch.nn.functional.dropout = lambda input, *args, **kwargs: input
    try:
        yield
    finally:
        torch.nn.functional.dropout = original


def capture_seq2seq_graphs(hf_model: PreTrainedModel, model: Seq2SeqModelConfig, config: NPUSeq2SeqConfig,
                           alignment_heads: tuple[tuple[int, int], ...] = ()
                           ) -> tuple[dict[str, Graph], dict[str, torch.Tensor]]:
    """Every graph of ``config``; returns (graphs, weights by checkpoint name). Works on a weightless model on the
    ``meta`` device too (the example inputs are made on the model's device): the planner's estimates."""
    dtype = getattr(torch, config.dtype)
    device = next(hf_model.parameters()).device
    caches = list(cache_shapes(model, config))
    with capture_form(hf_model, dtype) as hf, capture_attention(hf), without_functional_dropout(), \
            heads_without_counts(hf):
        encoder = StaticSeq2SeqEncoder(hf, audio=bool(model.audio_frames))
        decoder = StaticSeq2SeqDecoder(hf, model.layout, config.kvcache_partition_len, alignment_heads)
        graphs, weights = {}, {}
        for bucket in config.buckets():
            if bucket.kind == ENCODER_KIND:
                names = encoder_inputs(model)
                with torch.device(device):
                    args = _encoder_args(model, dtype, bucket.batch, bucket.tokens)
                module, kinds = encoder, ["input"] * len(names)
            else:
                prefill = bucket.kind != DECODE_KIND
                names = DECODER_INPUTS + caches + (PREFILL_EXTRAS if prefill else [])
                kinds = ["input"] * len(DECODER_INPUTS) + ["kv_cache"] * len(caches) + ["input"] * (len(names) - len(
                    DECODER_INPUTS) - len(caches))
                with torch.device(device):
                    module, args = decoder, _decoder_args(model, config, bucket.batch, bucket.tokens, prefill)
            graph, graph_weights = capture(module, args, bucket.name, names, kinds, WRAPPER_PREFIX,
                                           attributes=bucket.attributes())
            graphs[bucket.name] = graph
            weights.update(graph_weights)
    return graphs, weights


def compile_seq2seq(hf_model: PreTrainedModel, architecture: str, config: NPUSeq2SeqConfig, target: Path,
                    shipped_dir: Path | None = None, alignment_heads: tuple[tuple[int, int], ...] = ()) -> Path:
    """Writes the artifact of ``hf_model`` atomically to ``target`` (``config`` already resolved);
    ``alignment_heads``: (layer, head) pairs whose cross-attention the decode graphs also return (Whisper's
    token timestamps)."""
    model = Seq2SeqModelConfig.from_hf(hf_model.config, architecture)
    size = config.tensor_parallel_size
    if alignment_heads and size > 1:
        raise NPUConfigError(f"token_timestamps=True with tensor_parallel_size={size}: the alignment heads' "
                             "cross-attention is exported from one device only; use tensor_parallel_size=1 for "
                             "token timestamps")
    plan = seq2seq_tp_plan(model, size)

    def fill(root: Path) -> None:
        compiled = run_pipeline(lambda: capture_seq2seq_graphs(hf_model, model, config, alignment_heads), plan)
        (root / GRAPH_DIR).mkdir(parents=True)
        for name, graph in compiled.graphs.items():
            graph_path(root, name).write_text(graph.to_json())
        for rank, shard in enumerate(compiled.rank_weights):
            save_weights(root / weights_file(rank, size), shard)
        hf_model.config.save_pretrained(root)
        generation = hf_model.generation_config or GenerationConfig.from_model_config(hf_model.config)
        generation.save_pretrained(root)
        for name in SHIPPED_FILES if shipped_dir else ():
            if (Path(shipped_dir) / name).is_file():
                shutil.copy2(Path(shipped_dir) / name, root / name)
        document = {"architecture": architecture, "family": "seq2seq", **config.to_dict(),
                    "alignment_heads": [list(pair) for pair in alignment_heads],
                    "graphs": list(compiled.graphs), "npu_spec": resolve_spec(config.npu).to_dict(),
                    "library_version": __version__, "format_version": ARTIFACT_FORMAT_VERSION,
                    "torch_version": torch.__version__}
        (root / NPU_CONFIG_FILE).write_text(json.dumps(document, indent=1))

    return write_atomically(target, fill)
