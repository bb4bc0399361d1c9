"""Gemma 2: sandwich norms; soft-capping, ``query_pre_attn_scalar`` and sliding layers come from the config."""

from optimum_npu.models.adapters.gemma3 import SANDWICH_NORMS
from optimum_npu.models.adapters.spec import DecoderAdapter

GEMMA2 = DecoderAdapter(block="sandwich_norm", norms=SANDWICH_NORMS)
