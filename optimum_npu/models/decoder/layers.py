"""MLPs and decoder-layer layouts of the static-shape decoder, chosen by the adapter's data."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from optimum_npu.models.adapters.spec import MLP
from optimum_npu.models.decoder.blocks import project
from optimum_npu.models.decoder.moe import moe_mlp


def _module(layer: nn.Module, path: str) -> nn.Module:
    return getattr(layer, path) if path else layer


def module_mlp(layer: nn.Module, spec: MLP, linear: str, hidden: torch.Tensor) -> torch.Tensor:
    """The HF MLP module as it is (Llama/Gemma gated MLP, Phi fc1/fc2)."""
    return _module(layer, spec.module)(hidden)


def plain_mlp(layer: nn.Module, spec: MLP, linear: str, hidden: torch.Tensor) -> torch.Tensor:
    """down(act(up(x))) with biases (GPT-2 ``c_fc``/``c_proj``, OPT ``fc1``/``fc2``). [B, S, E] -> [B, S, E]."""
    owner = _module(layer, spec.module)
    up, down = (getattr(owner, name) for name in spec.projections)
    return project(down, getattr(owner, spec.act)(project(up, hidden, linear)), linear)


def fused_gated_mlp(layer: nn.Module, spec: MLP, linear: str, hidden: torch.Tensor) -> torch.Tensor:
    """down(act(gate) * up) from one gate_up projection (Phi-3). [B, S, E] -> [B, S, E].

    The rows are [gate | up]; viewing them as [.., 2, -1] keeps the graph valid when each device
    holds its slice of both parts.
    """
    owner = _module(layer, spec.module)
    gate_up, down = (getattr(owner, name) for name in spec.projections)
    states = project(gate_up, hidden, linear).view(*hidden.shape[:-1], 2, -1)   # [B, S, 2, I]
    return project(down, getattr(owner, spec.act)(states[..., 0, :]) * states[..., 1, :], linear)


MLPS: dict[str, Callable] = {"module": module_mlp, "plain": plain_mlp, "fused_gated": fused_gated_mlp, "moe": moe_mlp}

Sublayer = Callable[[torch.Tensor], torch.Tensor]


def pre_norm_layer(hidden: torch.Tensor, norms: list[nn.Module], attention: Sublayer, mlp: Sublayer) -> torch.Tensor:
    """Llama / GPT-2 / OPT: x + attn(n0(x)), then x + mlp(n1(x))."""
    hidden = hidden + attention(norms[0](hidden))
    return hidden + mlp(norms[1](hidden))


def sandwich_norm_layer(hidden: torch.Tensor, norms: list[nn.Module], attention: Sublayer,
                        mlp: Sublayer) -> torch.Tensor:
    """Gemma 2/3: norms before and after both the attention and the MLP."""
    hidden = hidden + norms[1](attention(norms[0](hidden)))
    return hidden + norms[3](mlp(norms[2](hidden)))


def parallel_layer(hidden: torch.Tensor, norms: list[nn.Module], attention: Sublayer, mlp: Sublayer) -> torch.Tensor:
    """Phi: attention and MLP read the same normed input; x + attn(n0(x)) + mlp(n0(x))."""
    normed = norms[0](hidden)
    return attention(normed) + mlp(normed) + hidden


LAYER_BLOCKS = {"pre_norm": pre_norm_layer, "sandwich_norm": sandwich_norm_layer, "parallel": parallel_layer}
