"""Sliding-window causal attention over a ring buffer: ``torch.ops.npu.sliding_window_attention``.

A sliding layer keeps, per batch slot, only the last ``window`` positions: a ring
``[num_slots, kv_heads, window, head_dim]`` where position ``p`` lives at ``p % window``
and is overwritten in place ``window`` positions later. A call attends over the ring as
it was before the call (the positions just before the first new token) plus the new
tokens themselves, then writes the new tokens into the ring. With ``k_scale`` / ``v_scale``
([num_slots, kv_heads, window] float32) the rings are fp8: each token is stored scaled into float8 e4m3
and read back dequantised. The index arithmetic on ``positions`` and ``slots`` is the same for every
layer of a graph call and is done once per call (``CallMemo``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.library import custom_op

from optimum_npu.device.kernels.attention_math import attend
from optimum_npu.device.kernels.call_memo import CallMemo
from optimum_npu.device.kernels.kv_quant import load_kv, store_kv


class RingCall(NamedTuple):
    """The index arithmetic of one graph call, shared by all its sliding layers."""

    slot_index: torch.Tensor     # [B] each row's ring
    key_pos: torch.Tensor        # [B, W+S] the position of every key: the ring's entries, then the new tokens
    rows: torch.Tensor           # [N] the new tokens kept in the ring (the last W of each row) ...
    cols: torch.Tensor           # [N] ... at these columns,
    ring_slots: torch.Tensor     # [N] written to these rings
    ring_pos: torch.Tensor       # [N] at these entries


#: The index arithmetic of the last call (every sliding layer of a graph call shares it).
_MEMO = CallMemo()


def _ring_call(positions: torch.Tensor, slots: torch.Tensor, ring_size: int) -> RingCall:
    valid = positions >= 0                                                            # [B, S]
    big = torch.iinfo(positions.dtype).max
    first = torch.where(valid, positions, big).amin(dim=1)                            # [B] first new position
    ring_index = torch.arange(ring_size)                                              # [W]
    # position held by ring entry i just before ``first``: the latest p < first with p % W == i
    held = first[:, None] - 1 - (first[:, None] - 1 - ring_index[None, :]) % ring_size  # [B, W]
    held = torch.where((held >= 0) & (first[:, None] < big), held, -1)
    slot_index = slots.long()
    last = torch.where(valid, positions, -1).amax(dim=1)                              # [B]
    keep = valid & (positions > last[:, None] - ring_size)                            # last W new tokens
    rows, cols = keep.nonzero(as_tuple=True)
    return RingCall(slot_index, torch.cat([held, positions], dim=1), rows, cols, slot_index[rows],
                    positions[rows, cols] % ring_size)


def sliding_window_attention_kernel(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    k_ring: torch.Tensor,
    v_ring: torch.Tensor,
    slots: torch.Tensor,
    positions: torch.Tensor,
    window: int,
    scale: float,
    softcap: float = 0.0,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """query [B, S, H, D]; key/value [B, S, KVH, D]; rings [NS, KVH, W, D]; scales (fp8 rings) [NS, KVH, W];
    slots [B]; positions [B, S] (-1 = padding); sinks [H] (attention-sink logits, gpt-oss). Returns [B, S, H, D]."""
    call = _MEMO.get((positions, slots), (k_ring.shape[2],), lambda: _ring_call(positions, slots, k_ring.shape[2]))
    slot_index = call.slot_index
    ring_keys = load_kv(k_ring[slot_index], k_scale[slot_index] if k_scale is not None else None)  # [B, KVH, W, D]
    ring_values = load_kv(v_ring[slot_index], v_scale[slot_index] if v_scale is not None else None)
    new_dtype = ring_keys.dtype if k_scale is not None else k_ring.dtype  # new tokens are not rounded to fp8 yet
    keys = torch.cat([ring_keys, key.permute(0, 2, 1, 3).to(new_dtype)], dim=2)     # [B, KVH, W+S, D]
    values = torch.cat([ring_values, value.permute(0, 2, 1, 3).to(new_dtype)], dim=2)
    out = attend(query, keys, values, call.key_pos, positions, scale, window=window, softcap=softcap, sinks=sinks)
    if call.rows.numel():
        store = (call.ring_slots, slice(None), call.ring_pos)
        store_kv(k_ring, k_scale, store, key[call.rows, call.cols])                   # [N, KVH, D]
        store_kv(v_ring, v_scale, store, value[call.rows, call.cols])
    return out


sliding_window_attention = custom_op("npu::sliding_window_attention", sliding_window_attention_kernel,
                                     mutates_args=("k_ring", "v_ring", "k_scale", "v_scale"))


@sliding_window_attention.register_fake
def _sliding_window_attention_fake(query, key, value, k_ring, v_ring, slots, positions, window, scale,
                                   softcap=0.0, k_scale=None, v_scale=None, sinks=None):
    return torch.empty_like(query)
