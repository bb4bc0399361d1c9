"""Decoder adapters: one small data value per HF architecture (see ``spec.DecoderAdapter``)."""

from optimum_npu.models.adapters.spec import MLP, Attention, DecoderAdapter, MoE, Positions

__all__ = ["MLP", "Attention", "DecoderAdapter", "MoE", "Positions"]
