"""Decoder-only causal LMs: config, static-shape wrapper, compile, runtime, HF-facing class.

The names below are imported on first use, so reading the knobs (``npu_config``: the CLI builds its flags from
them) does not load torch.
"""

from optimum_npu.lazy import lazy_exports

_EXPORTS = {
    "NPUModelForCausalLM": "optimum_npu.models.decoder.modeling",
    "NPUDecoderConfig": "optimum_npu.models.decoder.npu_config",
    "NPUConfigError": "optimum_npu.models.decoder.npu_config",
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
