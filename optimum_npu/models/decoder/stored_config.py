"""Reading an artifact's stored decoder knobs and model facts: untrusted data, checked like user input.

``config_from_stored`` turns ``npu_config.json`` into an ``NPUDecoderConfig`` (every knob present, typed,
in range, resolved), ``check_stored_config`` checks it against the model as ``resolve`` does at compile
time, and ``check_model_config`` bounds the shape facts of ``config.json`` — all before anything is sized
from them. Every refusal names the file and ends with ``STORED_FIX``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from optimum_npu.models.decoder.npu_config import (RESOLVED_KNOBS, NPUConfigError, NPUDecoderConfig,
                                                 expert_parallel_problem, expert_tensor_parallel_problem)
from optimum_npu.models.decoder.quantization import check_quantization
from optimum_npu.models.model_config import FULL, SLIDING, DecoderModelConfig

#: Longest ``npu`` label an artifact may store (a preset name or the spec file it was compiled for).
MAX_NPU_LABEL_CHARS = 4096
#: Most decode graphs (entries of ``decoder_batch_sizes``) an artifact may hold.
MAX_DECODER_BATCH_SIZES = 4096
#: Most decoder layers a model may have (config.json is read before any graph).
MAX_LAYERS = 4096
#: Knobs added after artifact format 2 was fixed, read as their default when an artifact predates them.
LATER_KNOBS = {"quantization": None, "expert_parallel_size": 1, "prefill_logits": "last",
               "expert_tensor_parallel": False}

#: What every refusal of a stored (artifact) knob ends with.
STORED_FIX = ("the artifact was modified or was not written by this optimum-npu: re-download it or recompile the "
              "model with from_pretrained(checkpoint, export=True)")


def stored_knob_error(origin: str, message: str) -> NPUConfigError:
    """An ``NPUConfigError`` for a knob read from an artifact's ``npu_config.json`` (``origin``)."""
    return NPUConfigError(f"{origin} is invalid: {message}; {STORED_FIX}")


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr`` cut to ``limit`` characters (values from files can be huge)."""
    text = repr(value) if not isinstance(value, (list, tuple)) or len(value) <= 16 else \
        f"{type(value).__name__} of {len(value)} items {repr(list(value[:8]))[:-1]}, ...]"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def config_from_stored(stored: Any, origin: str) -> NPUDecoderConfig:
    """The knobs of an artifact's ``npu_config.json`` (``origin``), checked like user input and as resolved.

    Every field must be present with its type and range (ints are ints, not bools; bools are bools), and
    the knobs ``resolve`` fills must hold values. Only then is anything sized from them.
    """
    if not isinstance(stored, dict):
        raise stored_knob_error(origin, f"it must be a JSON object, got {type(stored).__name__}")
    names = [f.name for f in dataclasses.fields(NPUDecoderConfig)]
    stored = {**LATER_KNOBS, **stored}
    missing = [name for name in names if name not in stored]
    if missing:
        raise stored_knob_error(origin, f"knobs {missing} are missing (a compiled artifact stores every knob)")
    knobs = {name: stored[name] for name in names}
    npu = knobs["npu"]
    if not isinstance(npu, str) or not npu or len(npu) > MAX_NPU_LABEL_CHARS or not npu.isprintable():
        raise stored_knob_error(origin, f"npu={short_repr(npu)} must be a preset name or the name of the spec "
                                        f"file it was compiled for (a printable string of at most "
                                        f"{MAX_NPU_LABEL_CHARS} characters)")
    sizes = knobs["decoder_batch_sizes"]
    if isinstance(sizes, list) and len(sizes) > MAX_DECODER_BATCH_SIZES:
        raise stored_knob_error(origin, f"decoder_batch_sizes lists {len(sizes)} sizes, more than the "
                                        f"{MAX_DECODER_BATCH_SIZES} allowed")
    for name in RESOLVED_KNOBS:
        if knobs[name] is None:
            raise stored_knob_error(origin, f"{name}=None: a compiled artifact stores the resolved value")
    for name in ("max_seq_len", "batch_size", "prefill_chunk_size", "kvcache_block_size", "kvcache_num_blocks",
                 "kvcache_partition_len", "tensor_parallel_size", "expert_parallel_size"):
        value = knobs[name]
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise stored_knob_error(origin, f"{name}={short_repr(value)} must be an integer")
    for name in ("dtype", "attn_impl", "collectives", "prefill_logits"):
        if not isinstance(knobs[name], str):
            raise stored_knob_error(origin, f"{name}={short_repr(knobs[name])} must be a string")
    if knobs["quantization"] is not None and not isinstance(knobs["quantization"], dict):
        raise stored_knob_error(origin, f"quantization={short_repr(knobs['quantization'])} must be an object "
                                        "or null")
    try:
        config = NPUDecoderConfig(**knobs)
    except NPUConfigError as err:
        raise stored_knob_error(origin, str(err).rstrip(".")) from None
    except (TypeError, ValueError) as err:
        raise stored_knob_error(origin, f"a knob has the wrong type ({short_repr(str(err), 200)})") from None
    if config.attn_impl == "flash_attn" and config.kvcache_partition_len is None:
        raise stored_knob_error(origin, "attn_impl='flash_attn' with kvcache_partition_len=None: a compiled "
                                        "artifact stores the partition length")
    return config


def check_stored_config(config: NPUDecoderConfig, model: DecoderModelConfig, origin: str) -> None:
    """Checks resolved knobs read from an artifact (``origin``) against the model, as ``resolve`` does at
    compile time; nothing here reads a file or resolves ``npu``."""
    def refuse(message: str):
        raise stored_knob_error(origin, message)

    tp = config.tensor_parallel_size
    for count, what in ((model.num_kv_heads, "key/value heads"), (model.num_heads, "attention heads"),
                        (model.intermediate_size, "MLP columns (intermediate_size)")):
        if count % tp:
            refuse(f"tensor_parallel_size={tp} does not divide the model's {count} {what}")
    if (problem := expert_parallel_problem(config.expert_parallel_size, model)) is not None:
        refuse(problem)
    if (problem := expert_tensor_parallel_problem(config.expert_tensor_parallel, tp, model)) is not None:
        refuse(problem)
    limit = model.max_position_embeddings
    if config.max_seq_len > limit:
        refuse(f"max_seq_len={config.max_seq_len} exceeds the model's max_position_embeddings={limit}")
    if config.prefill_chunk_size > config.max_seq_len:
        refuse(f"prefill_chunk_size={config.prefill_chunk_size} is larger than max_seq_len={config.max_seq_len}")
    block = config.kvcache_block_size
    if config.max_seq_len % block:
        refuse(f"max_seq_len={config.max_seq_len} is not a multiple of kvcache_block_size={block}")
    partition = config.kvcache_partition_len
    if config.attn_impl == "flash_attn" and (config.max_seq_len % partition or (partition % block and
                                                                            block % partition)):
        refuse(f"kvcache_partition_len={partition} must divide max_seq_len={config.max_seq_len} and be a multiple "
               f"or a divisor of kvcache_block_size={block}")
    check_quantization(config.quantization, model, tp, None, lambda message: stored_knob_error(origin, message),
                       expert_split=tp if config.expert_tensor_parallel else 1)
    if config.kvcache_num_blocks < config.blocks_per_sequence:
        refuse(f"kvcache_num_blocks={config.kvcache_num_blocks} cannot hold one sequence of max_seq_len="
               f"{config.max_seq_len} ({config.blocks_per_sequence} blocks of {block})")


def check_model_config(model: DecoderModelConfig, origin: str) -> None:
    """Checks the shape facts read from an artifact's config.json (``origin``) before anything is sized from them."""
    def refuse(message: str):
        raise NPUConfigError(f"{origin} is invalid: {message}; {STORED_FIX}")

    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                 "head_dim", "max_position_embeddings"):
        value = getattr(model, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            refuse(f"{name}={short_repr(value)} must be an integer >= 1")
    if model.num_layers > MAX_LAYERS:
        refuse(f"num_hidden_layers={model.num_layers} is more than the {MAX_LAYERS} layers supported")
    if model.num_heads % model.num_kv_heads:
        refuse(f"num_attention_heads={model.num_heads} is not a multiple of num_key_value_heads={model.num_kv_heads}")
    if len(model.layer_types) != model.num_layers or any(t not in (FULL, SLIDING) for t in model.layer_types):
        refuse(f"layer_types must list {model.num_layers} entries, each {FULL!r} or {SLIDING!r}")
    window = model.sliding_window
    if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 1):
        refuse(f"sliding_window={short_repr(window)} must be an integer >= 1 or null")
    if not isinstance(model.deepstack_layers, int) or not 0 <= model.deepstack_layers <= model.num_layers:
        refuse(f"the vision config's deepstack_visual_indexes ({model.deepstack_layers} layers) must not outnumber "
               f"the {model.num_layers} decoder layers")
