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

On the host, a context of one block per row on consecutive pool blocks is read in place (a view of
the pool, no copy): when the rows hold those blocks in another order, the queries are taken in the
order of their blocks and the outputs put back in the rows' order.
"""

from __future__ import annotations

from typing import NamedTuple

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
    call = _MEMO.get((positions, block_table), tuple(k_cache.shape[1:3]),
                     lambda: _call_indices(positions, block_table, *k_cache.shape[1:3]))
    if call is None:
        return torch.zeros_like(query)
    _store(k_cache, k_scale, call, _new_tokens(key, call.tokens))                     # [N, KVH, D]
    _store(v_cache, v_scale, call, _new_tokens(value, call.tokens))
    context = call.key_pos.shape[1]
    keys = _gathered(k_cache, k_scale, call.table, context)                           # [B, KVH, T, D]
    values = _gathered(v_cache, v_scale, call.table, context)                         # [B, KVH, T, D]
    if call.order is not None:                      # the rows in the order of their cache blocks (module doc)
        query = query.index_select(0, call.order)
        position_bias = None if position_bias is None else position_bias.index_select(0, call.order)
    out = attend(query, keys, values, call.key_pos, call.query_pos, scale, softcap=softcap,
                 partition_len=partition_len, bias=position_bias, sinks=sinks)
    return out if call.order is None else out.index_select(0, call.inverse)


class CallIndices(NamedTuple):
    """The index arithmetic of one graph call, shared by all its layers."""

    tokens: slice | tuple[torch.Tensor, torch.Tensor]  # the new tokens in the flattened [B*S] grid, or (rows, cols)
    blocks: torch.Tensor                   # [N] their cache blocks
    offsets: torch.Tensor                  # [N] and offsets in them
    rows: torch.Tensor                     # [N * KVH] their rows in a contiguous cache viewed [NB * KVH * BS, D]
    table: torch.Tensor | slice            # [B, nb] the context's blocks, or a slice of one block per row
    order: torch.Tensor | None             # [B] the row of each block of ``table`` when the slice is permuted
    inverse: torch.Tensor | None           # [B] the inverse permutation
    key_pos: torch.Tensor                  # [B, T] (T = the context: the last position + 1)
    query_pos: torch.Tensor                # [B, S] positions (in ``order`` when given)


#: The index arithmetic of the last call (the same for every layer of a graph call).
_MEMO = CallMemo()


def _call_indices(positions: torch.Tensor, block_table: torch.Tensor, kv_heads: int,
                  block_size: int) -> CallIndices | None:
    """The call's ``CallIndices``; None when no query is real."""
    valid = positions >= 0                                                            # [B, S]
    rows, cols = valid.nonzero(as_tuple=True)                                         # [N], [N]
    if rows.numel() == 0:
        return None
    count = rows.numel()
    if count == valid.numel():
        tokens = slice(None)                                                          # every token is real
    else:
        tokens = slice(0, count) if bool(valid.flatten()[:count].all()) else (rows, cols)  # a row-major prefix?
    token_pos = positions[rows, cols]                                                 # [N]
    blocks = block_table[rows, token_pos // block_size].long()                        # [N]
    offsets = token_pos % block_size                                                  # [N]
    rows_in_cache = ((blocks[:, None] * kv_heads + torch.arange(kv_heads)) * block_size + offsets[:, None]).flatten()
    context = int(token_pos.max()) + 1
    table = block_table[:, : -(-context // block_size)].long()                        # [B, nb]
    order = inverse = None
    query_pos = positions
    if table.shape[1] == 1:
        firsts = table[:, 0].tolist()
        first = min(firsts)
        if sorted(firsts) == list(range(first, first + len(firsts))):                # one block per row, consecutive
            if firsts != sorted(firsts):                                              # ... in another order
                inverse = table[:, 0] - first                                         # [B] row -> its block's place
                order = torch.argsort(inverse)                                        # [B] place -> its row
                query_pos = positions.index_select(0, order)
            table = slice(first, first + len(firsts))
    key_pos = torch.arange(context).expand(positions.shape[0], context)               # [B, T]
    return CallIndices(tokens, blocks, offsets, rows_in_cache, table, order, inverse, key_pos, query_pos)


def _store(cache: torch.Tensor, scales: torch.Tensor | None, call: CallIndices, new: torch.Tensor) -> None:
    """Writes the new tokens [N, KVH, D] into the cache: one row copy into a contiguous cache of their dtype."""
    if scales is None and cache.is_contiguous() and new.dtype == cache.dtype:
        cache.view(-1, cache.shape[-1]).index_copy_(0, call.rows, new.reshape(-1, cache.shape[-1]))
    else:
        store_kv(cache, scales, (call.blocks, slice(None), call.offsets), new)


def _new_tokens(x: torch.Tensor, tokens: slice | tuple) -> torch.Tensor:
    """The real tokens [N, KVH, D] of ``x`` [B, S, KVH, D]."""
    if not isinstance(tokens, slice):
        return x[tokens]
    return x.flatten(0, 1) if tokens.stop is None else x.flatten(0, 1)[tokens]


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
