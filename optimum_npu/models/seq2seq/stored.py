"""Reading a seq2seq artifact's ``npu_config.json`` (untrusted data) into validated facts before anything is loaded."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimum_npu.compile.artifact import read_graph
from optimum_npu.device.buckets import BUCKET_KEYS
from optimum_npu.device.spec import NPUSpec
from optimum_npu.models.decoder.artifact_files import check_stored_architecture, read_hf_config, stored_spec
from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.models.decoder.stored_config import short_repr, stored_knob_error
from optimum_npu.models.encoder.stored import runtime_options
from optimum_npu.models.seq2seq.architectures import Seq2SeqModelConfig
from optimum_npu.models.seq2seq.export import DECODER_INPUTS, PREFILL_EXTRAS, cache_shapes, encoder_inputs
from optimum_npu.models.seq2seq.npu_config import DECODE_KIND, ENCODER_KIND, NPUSeq2SeqConfig
from optimum_npu.schema import NPU_CONFIG_FILE, Graph
from optimum_npu.untrusted import expect_dict


@dataclass(frozen=True)
class StoredSeq2Seq:
    """What a verified seq2seq artifact holds, every field checked."""

    architecture: str
    model: Seq2SeqModelConfig
    config: NPUSeq2SeqConfig
    spec: NPUSpec
    hf_config: Any
    graphs: dict[str, Graph]
    alignment_heads: tuple[tuple[int, int], ...]


def read_stored(root: Path, stored: Any, requested: Any) -> StoredSeq2Seq:
    """Checks every stored knob like user input, then against config.json and the graphs' inputs; ``requested``:
    the caller's ``npu_config`` at load time (runtime options only)."""
    origin = str(Path(root) / NPU_CONFIG_FILE)
    stored = expect_dict(stored, origin, NPUConfigError)
    hf_config = read_hf_config(root)
    arch = check_stored_architecture(stored, hf_config, "seq2seq", origin)
    try:
        model = Seq2SeqModelConfig.from_hf(hf_config, arch.name)
        knobs = {key: stored.get(key) for key in NPUSeq2SeqConfig().to_dict()}
        config = NPUSeq2SeqConfig.coerce(knobs)
    except (NPUConfigError, TypeError, ValueError, AttributeError) as err:
        raise stored_knob_error(origin, short_repr(str(err), 300)) from None
    config = dataclasses.replace(config, **runtime_options(knobs, requested, NPUSeq2SeqConfig))
    if config.encoder_seq_lens is None or stored.get("graphs") != config.graph_names():
        raise stored_knob_error(origin, f"graphs={short_repr(stored.get('graphs'))} must be one per bucket of the "
                                        "stored knobs")
    heads = _alignment_heads(stored.get("alignment_heads"), model, origin)
    graphs = {name: read_graph(root, name) for name in config.graph_names()}
    caches = cache_shapes(model, config, per_rank=True)
    for bucket in config.buckets():
        graph = graphs[bucket.name]
        described = {key: graph.attributes.get(key) for key in BUCKET_KEYS}
        if bucket.kind == ENCODER_KIND:
            expected = encoder_inputs(model)
        else:
            expected = DECODER_INPUTS + list(caches) + (PREFILL_EXTRAS if bucket.kind != DECODE_KIND else [])
        names = [s.name for s in graph.inputs if s.kind != "weight"]
        shapes_ok = all(tuple(s.shape) == caches[s.name][0] and s.dtype == caches[s.name][1]
                        for s in graph.inputs if s.kind == "kv_cache")
        outputs_ok = bucket.kind == ENCODER_KIND or len(graph.outputs) == (2 if heads else 1)   # logits, alignment
        if described != bucket.attributes() or names != expected or not shapes_ok or not outputs_ok:
            raise stored_knob_error(origin, f"graph {bucket.name!r} does not match the stored bucket, inputs, "
                                            "cache shapes and outputs (logits, then the alignment heads' weights "
                                            "when alignment_heads is set)")
    return StoredSeq2Seq(arch.name, model, config, stored_spec(stored, origin), hf_config, graphs, heads)


def _alignment_heads(value: Any, model: Seq2SeqModelConfig, origin: str) -> tuple[tuple[int, int], ...]:
    if not isinstance(value, list) or len(value) > model.num_layers * model.heads or any(
            not isinstance(pair, list) or len(pair) != 2 or any(not isinstance(v, int) or isinstance(v, bool)
                                                                for v in pair)
            or not 0 <= pair[0] < model.num_layers or not 0 <= pair[1] < model.heads for pair in value):
        raise stored_knob_error(origin, f"alignment_heads={short_repr(value)} must be a list of [layer, head] "
                                        f"pairs within {model.num_layers} layers x {model.heads} heads")
    return tuple((layer, head) for layer, head in value)
