"""Paged causal attention with an in-place KV-cache update: ``torch.ops.npu.paged_attention``.

The KV cache of one layer is a pool of blocks ``[num_blocks, kv_heads, block_size, head_dim]``.
A block table ``[batch, blocks_per_seq]`` maps each sequence's logical block to a pool
block. ``positions`` gives the absolute position of each query token, ``-1`` for padding
(padding is neither written to the cache nor attended to). The kernel first writes the
new keys/values into the cache, then attends over each sequence's cached context up to
the position of every query (causal). ``partition_len`` > 0 selects flash attention: the
context is processed partition by partition with an online softmax. ``sinks`` [H] adds one logit per
head to every softmax (gpt-oss's attention sinks). With ``k_scale`` / ``v_scale``
([num_blocks, kv_heads, block_size] float32) the cache is fp8: each token's key and value are stored
scaled into float8 e4m3 and read back dequantised (``kv_quant``).
"""

from __future__ import annotations

import torch
from torch.library import custom_op

from optimum_npu.device.kernels.attention_math import attend
from optimum_npu.device.kernels.call_memo import CallMemo
from optimum_npu.device.kernels.kv_quant import load_kv, store_kv


def paged_attention_kernel(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    positions: torch.Tensor,
    scale: float,
    partition_len: int = 0,
    softcap: float = 0.0,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
    position_bias: torch.Tensor | None = None,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """query [B, S, H, D]; key/value [B, S, KVH, D]; caches [NB, KVH, BS, D]; scales (fp8 cache) [NB, KVH, BS];
    block_table [B, MB] int32; positions [B, S] int64 (-1 = padding); position_bias [B, H, S, MB * BS] additive
    (seq2seq decoders with relative positions, T5); sinks [H] (attention-sink logits, gpt-oss).
    Returns [B, S, H, D]."""
    rows, cols, blocks, offsets, table, key_pos = _MEMO.get(
        (positions, block_table), (k_cache.shape[2],), lambda: _call_indices(positions, block_table, k_cache.shape[2]))
    if rows.numel() == 0:
        return torch.zeros_like(query)
    store_kv(k_cache, k_scale, (blocks, slice(None), offsets), key[rows, cols])      # [N, KVH, D]
    store_kv(v_cache, v_scale, (blocks, slice(None), offsets), value[rows, cols])
    context = key_pos.shape[1]
    keys = _gathered(k_cache, k_scale, table, context)                      # [B, KVH, T, D]
    values = _gathered(v_cache, v_scale, table, context)                    # [B, KVH, T, D]
    return attend(query, keys, values, key_pos, positions, scale, softcap=softcap, partition_len=partition_len,
                  bias=position_bias, sinks=sinks)


#: The index arithmetic of the last call (the same for every layer of a graph call).
_MEMO = CallMemo()


def _call_indices(positions: torch.Tensor, block_table: torch.Tensor, block_size: int) -> tuple:
    """Valid query rows/columns [N], their cache blocks and offsets [N], the context's block table [B, nb]
    (or, when that is one block per row on consecutive blocks, their ``slice``) and key positions [B, T]
    (T = the context: the last position + 1)."""
    rows, cols = (positions >= 0).nonzero(as_tuple=True)                    # [N], [N]
    if rows.numel() == 0:
        return rows, cols, None, None, None, None
    token_pos = positions[rows, cols]                                       # [N]
    blocks = block_table[rows, token_pos // block_size].long()              # [N]
    offsets = token_pos % block_size                                        # [N]
    context = int(token_pos.max()) + 1
    table = block_table[:, : -(-context // block_size)].long()              # [B, nb]
    if table.shape[1] == 1:
        first = int(table[0, 0])
        if table[:, 0].tolist() == list(range(first, first + table.shape[0])):
            table = slice(first, first + table.shape[0])                    # the rows' blocks, in order
    key_pos = torch.arange(context).expand(positions.shape[0], context)     # [B, T]
    return rows, cols, blocks, offsets, table, key_pos


def _gathered(cache: torch.Tensor, scales: torch.Tensor | None, table: torch.Tensor | slice,
              context: int) -> torch.Tensor:
    """The first ``context`` cached tokens [B, KVH, T, D], dequantised when the cache has scales [NB, KVH, BS]."""
    values = _gather_context(cache, table, context)
    if scales is None:
        return values
    return load_kv(values, _gather_context(scales[..., None], table, context)[..., 0])


def _gather_context(cache: torch.Tensor, table: torch.Tensor | slice, context: int) -> torch.Tensor:
    """cache [NB, KVH, BS, D], table [B, nb] -> the first ``context`` cached tokens [B, KVH, T, D]
    (a view of the cache when ``table`` is a slice of consecutive single blocks)."""
    if isinstance(table, slice):
        return cache[table, :, :context]
    batch, num_blocks = table.shape
    _, kv_heads, block_size, head_dim = cache.shape
    if num_blocks == 1:
        return cache[table[:, 0], :, :context]
    gathered = cache[table].permute(0, 2, 1, 3, 4)                          # [B, KVH, nb, BS, D]
    return gathered.reshape(batch, kv_heads, num_blocks * block_size, head_dim)[:, :, :context]


paged_attention = custom_op("npu::paged_attention", paged_attention_kernel,
                            mutates_args=("k_cache", "v_cache", "k_scale", "v_scale"))


@paged_attention.register_fake
def _paged_attention_fake(query, key, value, k_cache, v_cache, block_table, positions, scale, partition_len=0,
                          softcap=0.0, k_scale=None, v_scale=None, position_bias=None, sinks=None):
    return torch.empty_like(query)
