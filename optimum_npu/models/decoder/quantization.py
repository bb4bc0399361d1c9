"""The ``quantization`` knob of a decoder: checked against the model's linear layers and the target spec,
and the weight and KV-cache bytes it implies where no graph exists yet (the shape estimates of
``memory_plan``). The pass itself is ``compile/quantize.py``; the format is ``compile/quantization_config.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from optimum_npu.compile.quantization_config import QuantizationConfig, QuantizationConfigError
from optimum_npu.device.spec import PRESETS, NPUSpec

if TYPE_CHECKING:  # annotations only: importing the knobs must not load Transformers
    from optimum_npu.models.model_config import DecoderModelConfig

#: Bits per stored weight value of each format.
WEIGHT_BITS = {"int8": 8, "int4": 4, "fp8": 8}
#: Bytes of one key (or value) scale per token and head in an fp8 KV cache.
KV_SCALE_BYTES = 4


def coerce_quantization(value: Any, error: Callable[[str], Exception]) -> QuantizationConfig | None:
    """The knob as a ``QuantizationConfig`` (dict, string or object), its errors raised as ``error``."""
    try:
        return QuantizationConfig.coerce(value)
    except (QuantizationConfigError, TypeError) as err:
        raise error(str(err)) from None


def check_quantization(config: QuantizationConfig | None, model: DecoderModelConfig, tensor_parallel_size: int,
                       spec: NPUSpec | None, error: Callable[[str], Exception], expert_split: int = 1) -> None:
    """Refuses, before any capture, a group size that does not divide a layer's input features (per device for
    the row-parallel layers; ``expert_split``: devices each routed expert's intermediate size is split over) and
    an fp8 format on a spec without an fp8 engine (``spec`` None: not checked)."""
    if config is None:
        return
    tp = tensor_parallel_size
    layers = {"the q/k/v and gate/up projections (hidden_size)": model.hidden_size,
              "the attention output projection (num_heads x head_dim)": model.num_heads * model.head_dim // tp,
              "the MLP down projection (intermediate_size)": model.intermediate_size // tp}
    if model.num_experts:
        layers["the experts' down projection (moe_intermediate_size)"] = model.moe_intermediate_size // expert_split
    try:
        config.check_in_features(layers, tp)
        if spec is not None:
            config.check_spec(spec.name, spec.peak_flops, PRESETS)
    except QuantizationConfigError as err:
        raise error(str(err)) from None


def weight_bytes(model: DecoderModelConfig, config: QuantizationConfig | None, itemsize: int, tp: int,
                 ep: int = 1) -> int:
    """Bytes of the transformer layers' weights on one device (everything but the embedding and logits tables):
    quantized values and their scales when ``config`` quantizes weights (norms and biases counted as quantized:
    a shape estimate). Routed experts are split over ``ep`` devices (by expert, or by intermediate size under
    ``expert_tensor_parallel``: the same bytes), replicated when ``ep`` is 1, and quantized like the linears."""
    table = model.vocab_size * model.hidden_size
    routed = model.moe_layers * model.num_experts * 3 * model.hidden_size * model.moe_intermediate_size // ep
    layers = (model.num_parameters - table * (1 if model.tie_word_embeddings else 2) - routed * ep) // tp + routed
    if config is None or config.weights is None:
        return layers * itemsize
    group = config.group_size if config.grouped else model.hidden_size
    return layers * WEIGHT_BITS[config.weights] // 8 + layers // group * itemsize


def kv_bytes_per_element(config: QuantizationConfig | None, itemsize: int, head_dim: int) -> float:
    """Bytes per cached key (or value) element: ``itemsize``, or one fp8 byte plus a share of the token's scale."""
    if config is None or config.kv_cache is None:
        return float(itemsize)
    return 1.0 + KV_SCALE_BYTES / head_dim


def kv_cache_dtype(config: QuantizationConfig | None, dtype: str) -> str:
    """The dtype the KV-cache tensors are stored in."""
    return "float8_e4m3fn" if config is not None and config.kv_cache == "fp8" else dtype
