"""Checkpoints quantized by another tool, compiled without re-quantizing: compressed-tensors FP8 per channel.

A compressed-tensors checkpoint (``quantization_config.quant_method == "compressed-tensors"`` in
config.json, as written by ``compressed-tensors`` / ``llm-compressor``) in the ``float-quantized``
format with 8-bit float weights, one scale per output channel, stores each quantized linear as
``<module>.weight`` (float8 e4m3 [out, in]) and ``<module>.weight_scale`` ([out, 1]): exactly the
``fp8`` layout of ``compile/quantize.py``. Those tensors are handed to the quantize pass as they are;
the HF module that is traced gets their dequantised values (``q * scale``), which only shape the
graphs. Nothing here imports ``compressed_tensors``: its config and tensors are read as data, and
anything but the one supported scheme is refused with what is supported.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from optimum_npu.device.kernels.quantized_linear import FP8

SUPPORTED = ("compressed-tensors checkpoints in the 'float-quantized' format whose weights are 8-bit floats "
             "('type': 'float', 'num_bits': 8) with one static symmetric scale per output channel "
             "('strategy': 'channel'), without activation or KV-cache quantization")
SCALE_SUFFIX = "_scale"


class PrequantizedCheckpointError(ValueError):
    """A pre-quantized checkpoint this release cannot compile as it is (the message says what is supported)."""


@dataclass(frozen=True)
class Prequantized:
    """The quantized tensors of a checkpoint, by weight name: ``{"...q_proj.weight": (fp8 values, scale [N, 1])}``."""

    fmt: str
    tensors: dict[str, tuple[torch.Tensor, torch.Tensor]]


def _refuse(origin: str, what: str) -> PrequantizedCheckpointError:
    return PrequantizedCheckpointError(f"{origin}: {what}; optimum-npu compiles {SUPPORTED}. Dequantise the "
                                       "checkpoint (or export the original one) and use npu_config={'quantization': "
                                       "...} to quantize it here")


def check_scheme(quantization_config: Any, origin: str) -> str:
    """The weight format (``fp8``) of a checkpoint's ``quantization_config``, or a refusal naming the mismatch."""
    config = quantization_config.to_dict() if hasattr(quantization_config, "to_dict") else quantization_config
    if not isinstance(config, dict) or config.get("quant_method") != "compressed-tensors":
        method = config.get("quant_method") if isinstance(config, dict) else type(config).__name__
        raise _refuse(origin, f"quantization method {method!r} is not supported")
    groups = config.get("config_groups")
    if not isinstance(groups, dict) or not groups:
        raise _refuse(origin, "quantization_config has no config_groups")
    for name, group in groups.items():
        weights = group.get("weights") if isinstance(group, dict) else None
        wanted = {"type": "float", "num_bits": 8, "strategy": "channel", "symmetric": True, "dynamic": False}
        found = {key: weights.get(key) for key in wanted} if isinstance(weights, dict) else None
        if found != wanted:
            raise _refuse(origin, f"config group {name!r} quantizes weights as {found}, not {wanted}")
        if group.get("input_activations") or group.get("output_activations"):
            raise _refuse(origin, f"config group {name!r} also quantizes activations")
        if group.get("format", config.get("format")) != "float-quantized":
            raise _refuse(origin, f"config group {name!r} has format {group.get('format', config.get('format'))!r}")
    if config.get("kv_cache_scheme"):
        raise _refuse(origin, "it quantizes the KV cache (use npu_config={'quantization': {'kv_cache': 'fp8'}})")
    return "fp8"


def _checkpoint_tensors(checkpoint: Path) -> dict[str, torch.Tensor]:
    index = checkpoint / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() \
        else ["model.safetensors"]
    tensors: dict[str, torch.Tensor] = {}
    for name in files:
        with safe_open(str(checkpoint / Path(name).name), framework="pt") as handle:
            tensors.update({key: handle.get_tensor(key) for key in handle.keys()})
    return tensors


def load_prequantized(checkpoint: Path, hf_config: PretrainedConfig,
                      dtype: torch.dtype) -> tuple[PreTrainedModel, Prequantized] | None:
    """(the model to trace, with dequantised weights; the checkpoint's quantized tensors), or None when the
    checkpoint is not quantized."""
    if getattr(hf_config, "quantization_config", None) is None:
        return None
    origin = str(Path(checkpoint) / "config.json")
    fmt = check_scheme(hf_config.quantization_config, origin)
    state = _checkpoint_tensors(Path(checkpoint))
    quantized = {}
    for key in [k for k in state if k.endswith(".weight" + SCALE_SUFFIX)]:
        weight, scale = key.removesuffix(SCALE_SUFFIX), state.pop(key)
        values = state.get(weight)
        if values is None or values.dtype != FP8 or values.dim() != 2 or tuple(scale.shape) != (values.shape[0], 1):
            raise _refuse(origin, f"{weight} is not a float8 e4m3 [out, in] tensor with a [out, 1] scale")
        quantized[weight] = (values, scale.to(dtype))
        state[weight] = (values.float() * scale.float()).to(dtype)
    plain = copy.deepcopy(hf_config)
    del plain.quantization_config
    model = AutoModelForCausalLM.from_config(plain, dtype=dtype).eval()
    missing, unexpected = model.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v
                                                 for k, v in state.items()}, strict=False)
    tied = {"lm_head.weight"} if getattr(plain, "tie_word_embeddings", False) else set()
    if unexpected or set(missing) - tied:
        raise _refuse(origin, f"its tensors do not match the model (missing {sorted(missing)[:4]}, unexpected "
                              f"{sorted(unexpected)[:4]})")
    if tied:
        model.tie_weights()
    return model, Prequantized(fmt, quantized)


def with_checkpoint_format(npu_config: Any, fmt: str, origin: str):
    """The compile knobs with ``quantization.weights`` set to the checkpoint's format (``fmt``); a different weight
    format is refused (it would re-quantize quantized values)."""
    import dataclasses

    from optimum_npu.compile.quantization_config import QuantizationConfig
    from optimum_npu.models.decoder.npu_config import NPUConfigError, NPUDecoderConfig

    config = NPUDecoderConfig.coerce(npu_config)
    current = config.quantization
    if current is not None and current.weights not in (None, fmt):
        raise NPUConfigError(f"quantization weights={current.weights!r} would re-quantize {origin}, whose weights are "
                             f"already quantized ({fmt}); drop 'weights' or set it to {fmt!r}")
    quantization = dataclasses.replace(current, weights=fmt) if current else QuantizationConfig(weights=fmt)
    return dataclasses.replace(config, quantization=quantization)
