"""Paged causal attention with an in-place KV-cache update: ``torch.ops.npu.paged_attention``.

The KV cache of one layer is a pool of blocks ``[num_blocks, kv_heads, block_size, head_dim]``.
A block table ``[batch, blocks_per_seq]`` maps each sequence's logical block to a pool
block. ``positions`` gives the absolute position of each query token, ``-1`` for padding
(padding is neither written to the cache nor attended to). The kernel first writes the
new keys/values into the cache, then attends over each sequence's cached context up to
the position of every query (causal). ``partition_len`` > 0 selects flash attention: the
context is processed partition by partition with an online softmax. With ``k_scale`` / ``v_scale``
([num_blocks, kv_heads, block_size] float32) the cache is fp8: each token's key and value are stored
scaled into float8 e4m3 and read back dequantised (``kv_quant``).
"""

from __future__ import annotations

import torch
from torch.library import custom_op

from optimum_npu.device.kernels.attention_math import attend
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
) -> torch.Tensor:
    """query [B, S, H, D]; key/value [B, S, KVH, D]; caches [NB, KVH, BS, D]; scales (fp8 cache) [NB, KVH, BS];
    block_table [B, MB] int32; positions [B, S] int64 (-1 = padding). Returns [B, S, H, D]."""
    block_size = k_cache.shape[2]
    rows, cols = (positions >= 0).nonzero(as_tuple=True)                    # [N], [N]
    if rows.numel() == 0:
        return torch.zeros_like(query)
    token_pos = positions[rows, cols]                                       # [N]
    blocks = block_table[rows, token_pos // block_size].long()              # [N]
    offsets = token_pos % block_size                                        # [N]
    store_kv(k_cache, k_scale, (blocks, slice(None), offsets), key[rows, cols])      # [N, KVH, D]
    store_kv(v_cache, v_scale, (blocks, slice(None), offsets), value[rows, cols])

    context = int(token_pos.max()) + 1
    table = block_table[:, : -(-context // block_size)].long()              # [B, nb]
    keys = _gathered(k_cache, k_scale, table, context)                      # [B, KVH, T, D]
    values = _gathered(v_cache, v_scale, table, context)                    # [B, KVH, T, D]
    key_pos = torch.arange(context).expand(query.shape[0], context)         # [B, T]
    return attend(query, keys, values, key_pos, positions, scale, softcap=softcap, partition_len=partition_len)


def _gathered(cache: torch.Tensor, scales: torch.Tensor | None, table: torch.Tensor, context: int) -> torch.Tensor:
    """The first ``context`` cached tokens [B, KVH, T, D], dequantised when the cache has scales [NB, KVH, BS]."""
    values = _gather_context(cache, table, context)
    if scales is None:
        return values
    return load_kv(values, _gather_context(scales[..., None], table, context)[..., 0])


def _gather_context(cache: torch.Tensor, table: torch.Tensor, context: int) -> torch.Tensor:
    """cache [NB, KVH, BS, D], table [B, nb] -> the first ``context`` cached tokens [B, KVH, T, D]."""
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
                          softcap=0.0, k_scale=None, v_scale=None):
    return torch.empty_like(query)
