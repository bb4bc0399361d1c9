"""Llama and the decoders laid out like it (Mistral, Qwen2, Qwen3 with q/k norms, Gemma with its
scaled embedding and (1 + w) RMSNorm, both inside its HF modules): every default of ``DecoderAdapter``."""

from optimum_npu.models.adapters.spec import DecoderAdapter

LLAMA = DecoderAdapter()
