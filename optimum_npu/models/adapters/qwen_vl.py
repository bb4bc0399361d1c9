"""The text decoders of Qwen2-VL, Qwen2.5-VL and Qwen3-VL: Llama-like, under ``model.language_model``, M-RoPE."""

from optimum_npu.models.adapters.spec import DecoderAdapter, Positions

QWEN_VL = DecoderAdapter(text_model="model.language_model", positions=Positions(mrope=True))
