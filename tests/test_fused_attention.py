"""The paged attention kernel's host paths (the fused SDPA path, a permuted context read in place, the
masked-softmax path) against attention written out token by token: GQA, padding queries, multi-block
tables, chunks that start mid-sequence, a position bias; padding queries give exact zeros."""

from __future__ import annotations

import pytest
import torch

from optimum_npu.device.kernels import attention_math
from optimum_npu.device.kernels.attention_math import attend
from optimum_npu.device.kernels.paged_attention import paged_attention_kernel

HEADS, KV_HEADS, DIM, POOL = 6, 2, 8, 12
SCALE = DIM ** -0.5


def reference(query, key, value, k_cache, v_cache, table, positions, bias=None):
    """Writes the new tokens into copies of the caches, then attends query by query. -> [B, S, H, D]."""
    k_cache, v_cache = k_cache.clone(), v_cache.clone()
    block = k_cache.shape[2]
    real = [(b, s, int(p)) for (b, s), p in zip(torch.cartesian_prod(*map(torch.arange, positions.shape)).tolist(),
                                                 positions.flatten()) if p >= 0]
    for b, s, p in real:
        k_cache[table[b, p // block], :, p % block] = key[b, s]
        v_cache[table[b, p // block], :, p % block] = value[b, s]
    out = torch.zeros_like(query)
    for b, s, p in real:
        seen = torch.arange(p + 1)
        blocks, offsets = table[b, seen // block].long(), seen % block
        keys = k_cache[blocks, :, offsets].repeat_interleave(HEADS // KV_HEADS, dim=1)      # [p+1, H, D]
        values = v_cache[blocks, :, offsets].repeat_interleave(HEADS // KV_HEADS, dim=1)
        scores = torch.einsum("hd,thd->ht", query[b, s], keys) * SCALE                     # [H, p+1]
        if bias is not None:
            scores = scores + bias[b, :, s, : p + 1]
        out[b, s] = torch.einsum("ht,thd->hd", torch.softmax(scores, dim=-1), values)
    return out


CASES = {   # name -> (positions [B, S], block table [B, nb], block size)
    "decode, equal contexts, blocks in reverse": ([[9]] * 4, [[3], [2], [1], [0]], 16),
    "decode, unequal contexts, a padding row": ([[9], [5], [-1], [12]], [[0], [1], [2], [2]], 16),
    "decode, blocks in shuffled order, a padding row": ([[4], [-1], [15]], [[6], [7], [5]], 16),
    "chunks over multi-block tables, mid-sequence": ([list(range(3, 11)), [0, 1, 2, 3, 4, -1, -1, -1]],
                                                     [[7, 2, 9, 0, 11, 4], [1, 10, 3, 8, 5, 6]], 4),
    "padding before a real token": ([[-1, 2, 3], [0, -1, -1]], [[5, 1], [8, 0]], 4),
    "no real token": ([[-1, -1]], [[0]], 16),
}


def inputs(positions, table, block, seed):
    gen = torch.Generator().manual_seed(seed)
    positions, table = torch.tensor(positions), torch.tensor(table, dtype=torch.int32)
    batch, seq = positions.shape
    return (torch.randn(batch, seq, HEADS, DIM, generator=gen), torch.randn(batch, seq, KV_HEADS, DIM, generator=gen),
            torch.randn(batch, seq, KV_HEADS, DIM, generator=gen), torch.randn(POOL, KV_HEADS, block, DIM, generator=gen),
            torch.randn(POOL, KV_HEADS, block, DIM, generator=gen), table, positions)


@pytest.fixture(params=[True, False], ids=["fused", "masked"])
def path(request, monkeypatch):
    monkeypatch.setattr(attention_math, "FUSED", request.param)
    return request.param


@pytest.mark.parametrize("with_bias", [False, True], ids=["plain", "position bias"])
@pytest.mark.parametrize("case", list(CASES))
def test_paged_attention_matches_token_by_token_attention(case, with_bias, path):
    positions, table, block = CASES[case]
    query, key, value, k_cache, v_cache, table, positions = inputs(positions, table, block, seed=len(case))
    bias = torch.randn(*positions.shape[:1], HEADS, positions.shape[1], table.shape[1] * block) if with_bias else None
    want = reference(query, key, value, k_cache, v_cache, table, positions, bias)
    for call in range(2):          # the second call reuses the memoised index work (as a graph's next layer does)
        k_copy, v_copy = k_cache.clone(), v_cache.clone()
        got = paged_attention_kernel(query, key, value, k_copy, v_copy, table, positions, SCALE, position_bias=bias)
        assert got.shape == query.shape and got.is_contiguous() and not got.isnan().any()
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        assert torch.equal(got[positions < 0], torch.zeros_like(got[positions < 0]))    # padding queries: exact 0


@pytest.mark.parametrize("window", [0, 3])
def test_fused_attend_matches_the_masked_softmax(window, monkeypatch):
    gen = torch.Generator().manual_seed(window)
    query, keys, values = (torch.randn(2, 5, HEADS, DIM, generator=gen), torch.randn(2, KV_HEADS, 9, DIM, generator=gen),
                           torch.randn(2, KV_HEADS, 9, DIM, generator=gen))
    key_pos = torch.tensor([list(range(9)), [-1, -1] + list(range(7))])          # a ring's unwritten entries: -1
    query_pos = torch.tensor([[4, 5, 6, 7, -1], [2, 3, 4, 5, 6]])
    fused = attend(query, keys, values, key_pos, query_pos, SCALE, window=window)
    monkeypatch.setattr(attention_math, "FUSED", False)
    masked = attend(query, keys, values, key_pos, query_pos, SCALE, window=window)
    torch.testing.assert_close(fused, masked, rtol=0, atol=1e-5)
    assert torch.equal(fused[0, 4], torch.zeros(HEADS, DIM))
