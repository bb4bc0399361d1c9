"""Decoder-only causal LMs: config, static-shape wrapper, compile, runtime, HF-facing class."""

from optimum_npu.models.decoder.modeling import NPUModelForCausalLM
from optimum_npu.models.decoder.npu_config import NPUConfigError, NPUDecoderConfig

__all__ = ["NPUModelForCausalLM", "NPUDecoderConfig", "NPUConfigError"]
