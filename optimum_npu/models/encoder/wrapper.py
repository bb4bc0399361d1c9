"""The static-shape forward of an HF encoder, as captured per (batch, length) bucket.

``StaticEncoder.forward(*graph inputs)`` (text: ``input_ids [B, S], attention_bias [B, 1, 1, S],
token_type_ids [B, S]?``; images: ``pixel_values [B, C, P, P]``, see ``feeds.py``) returns the task's
outputs (``EncoderTask.outputs``) as a tuple. The HF model runs as it is
(its modules and weights, named as in its checkpoint) with two changes made only while it is
captured, and undone after:

- attention is ``encoder_attention`` (registered with Transformers' ``AttentionInterface``):
  matmul, additive padding bias, softmax in float32, matmul; no dropout node;
- dropout modules are identities (inference).

The padding bias is computed on the host from the attention mask (0 on tokens, the dtype's
most negative value on padding), so the mask-building code of Transformers is not captured and
a padded key never contributes: outputs at real tokens do not depend on the padding.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Iterator

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel

#: The name ``encoder_attention`` is registered under in Transformers' attention interface.
ATTENTION_NAME = "optimum_npu_encoder"
#: Prefix of the HF model inside the wrapper; stripped so weights keep their checkpoint names.
WRAPPER_PREFIX = "model."


def encoder_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                      position_bias: torch.Tensor | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """query/key/value [B, H, S, D], attention_mask [B, 1, 1, S] additive, position_bias [1, H, S, S] (T5's
    relative positions, the seq2seq family's encoders) -> ([B, S, H, D], None)."""
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)).float() * scale             # [B, H, S, S], float32
    if position_bias is not None:
        scores = scores + position_bias.float()
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = torch.softmax(scores, dim=-1).to(query.dtype)
    return torch.matmul(probs, value).transpose(1, 2), None                       # [B, S, H, D]


AttentionInterface.register(ATTENTION_NAME, encoder_attention)


def takes_argument(hf_model: PreTrainedModel, name: str) -> bool:
    """Whether the model's forward has argument ``name`` (``token_type_ids``: BERT, RoBERTa, XLM-R; not
    DistilBERT. ``interpolate_pos_encoding``: ViT)."""
    return name in inspect.signature(hf_model.forward).parameters


def attention_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, S] 1/0 mask -> [B, 1, 1, S] additive bias (0 on tokens, the dtype's minimum on padding)."""
    bias = (1.0 - attention_mask.to(torch.float32)) * torch.finfo(dtype).min
    return bias.to(dtype)[:, None, None, :]


def causal_attention_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, S] 1/0 mask -> [B, 1, S, S] additive bias: query i sees key j <= i that is not padding."""
    width = attention_mask.shape[1]
    seen = attention_mask.bool()[:, None, None, :] & torch.ones(width, width, dtype=torch.bool).tril()
    return torch.zeros(seen.shape, dtype=dtype).masked_fill(~seen, torch.finfo(dtype).min)


@contextlib.contextmanager
def capture_attention(hf_model: PreTrainedModel) -> Iterator[None]:
    """The model with ``encoder_attention`` and without dropout while captured; restored after."""
    configs = {id(m.config): m.config for m in hf_model.modules() if hasattr(getattr(m, "config", None),
                                                                              "_attn_implementation")}
    previous_impl = [(config, config._attn_implementation) for config in configs.values()]
    dropouts = [(parent, name, child) for parent in hf_model.modules()
                for name, child in parent.named_children() if isinstance(child, nn.Dropout)]
    try:
        for config, _ in previous_impl:
            config._attn_implementation = ATTENTION_NAME
        for parent, name, _ in dropouts:
            setattr(parent, name, nn.Identity())
        yield
    finally:
        for parent, name, child in dropouts:
            setattr(parent, name, child)
        for config, impl in previous_impl:
            config._attn_implementation = impl


class StaticEncoder(nn.Module):
    """An HF encoder (with its task head) returning the named outputs as a tuple.

    Args:
        hf_model: the HF model (its modules and weights are used as they are).
        outputs: the output fields to return, in order.
        input_names: the graph inputs, in order.
        arguments: the HF forward argument of a graph input named otherwise (``attention_bias`` is passed
            as ``attention_mask``).
        fixed: constant HF forward arguments (``interpolate_pos_encoding=True``).
    """

    def __init__(self, hf_model: PreTrainedModel, outputs: tuple[str, ...], input_names: tuple[str, ...],
                 arguments: dict[str, str], fixed: dict):
        super().__init__()
        self.model = hf_model
        self.outputs = outputs
        self.arguments = [arguments.get(name, name) for name in input_names]
        self.fixed = fixed

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        result = self.model(**dict(zip(self.arguments, inputs)), **self.fixed, return_dict=True)
        return tuple(result[name] for name in self.outputs)

    def present(self, example: tuple[torch.Tensor, ...], wanted: tuple[str, ...]) -> tuple[str, ...]:
        """The task outputs this model gives (a BERT without pooler gives no ``pooler_output``), from a tiny run
        on ``example`` inputs (under ``capture_attention``)."""
        with torch.no_grad():
            result = self.model(**dict(zip(self.arguments, example)), **self.fixed, return_dict=True)
        return tuple(name for name in wanted if result.get(name) is not None)
