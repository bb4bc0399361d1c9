"""Masked attention arithmetic shared by the NPU attention kernels: one-shot or by partitions."""

from __future__ import annotations

import torch

from optimum_npu.device.kernels.attention_mask import allowed_mask
from optimum_npu.device.kernels.call_memo import CallMemo
from optimum_npu.device.kernels.fused_attention import fused_attend

#: Plain attention (no softcap, bias, sinks or partitions) runs as one fused call (``fused_attention``); False
#: sends it through the masked-softmax math below like the other variants (the baseline of
#: ``bench/bench_attention_kernel.py``).
FUSED = True


def _grouped_mask(key_pos: torch.Tensor, query_pos: torch.Tensor, window: int, kv_heads: int,
                  group: int) -> torch.Tensor:
    """``allowed_mask`` repeated for the ``group`` query heads of each of ``kv_heads``: [B, KVH, G*S, T]."""
    allowed = allowed_mask(key_pos, query_pos, window)                                # [B, S, T]
    batch, seq, _ = allowed.shape
    return allowed[:, None, None].expand(batch, kv_heads, group, seq, -1).reshape(batch, kv_heads, group * seq, -1)


#: The masked-out keys of the last call (every layer of a graph call shares its positions).
_MASKS = CallMemo()


def _scores(q: torch.Tensor, keys: torch.Tensor, scale: float, softcap: float,
            bias: torch.Tensor | None = None) -> torch.Tensor:
    """q [B, KVH, G*S, D], keys [B, KVH, T, D], bias [B, KVH, G*S, T] additive -> [B, KVH, G*S, T] in float32."""
    scores = torch.matmul(q.float(), keys.float().transpose(-1, -2)) * scale
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    return scores if bias is None else scores + bias.float()


def _sink_logits(sinks: torch.Tensor, kv_heads: int, rows: int) -> torch.Tensor:
    """sinks [H] -> [KVH, G*S] in float32, laid out like the grouped query rows (head h = kvh * G + g)."""
    return sinks.float().view(kv_heads, -1, 1).expand(-1, -1, rows).reshape(kv_heads, -1)


def attend(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, key_pos: torch.Tensor,
           query_pos: torch.Tensor, scale: float, window: int = 0, softcap: float = 0.0,
           partition_len: int = 0, bias: torch.Tensor | None = None,
           sinks: torch.Tensor | None = None) -> torch.Tensor:
    """query [B, S, H, D]; keys/values [B, KVH, T, D]; key_pos [B, T]; query_pos [B, S] -> [B, S, H, D].

    With ``partition_len`` > 0 the keys are processed ``partition_len`` at a time with an
    online softmax (flash attention), and partitions past every query's position are skipped.
    ``bias`` [B, H, S, >= T]: an additive score bias per head (T5's relative positions), its first T keys used.
    ``sinks`` [H] (gpt-oss): one more logit per head in every softmax, which takes probability mass
    and contributes no value (the online softmax starts from it: running max = sink, denominator = 1).
    """
    if FUSED and not (softcap or partition_len) and bias is None and sinks is None:
        return fused_attend(query, keys, values, key_pos, query_pos, scale, window)
    batch, seq, heads, head_dim = query.shape
    kv_heads = keys.shape[1]
    group = heads // kv_heads
    q = query.permute(0, 2, 1, 3).reshape(batch, kv_heads, group * seq, head_dim)   # [B, KVH, G*S, D]
    blocked = _MASKS.get((key_pos, query_pos), (window, kv_heads, group),
                         lambda: ~_grouped_mask(key_pos, query_pos, window, kv_heads, group))  # [B, KVH, G*S, T]
    if bias is not None:
        bias = bias[..., :keys.shape[2]].reshape(batch, kv_heads, group * seq, keys.shape[2])  # [B, KVH, G*S, T]
    sink = None if sinks is None else _sink_logits(sinks, kv_heads, seq).expand(batch, -1, -1)  # [B, KVH, G*S]
    if partition_len:
        out = _attend_partitioned(q, keys, values, blocked, scale, softcap, partition_len, key_pos, query_pos, bias,
                                  sink)
    else:
        scores = _scores(q, keys, scale, softcap, bias).masked_fill(blocked, float("-inf"))
        if sink is not None:                                                          # softmax over [scores | sink]
            scores = torch.cat([scores, sink[..., None]], dim=-1)
        probs = torch.softmax(scores, dim=-1).nan_to_num_(0.0)                        # fully masked rows -> 0
        if sink is not None:
            probs = probs[..., :-1]                                                   # the sink carries no value
        out = torch.matmul(probs, values.float())                                     # [B, KVH, G*S, D]
    out = out.view(batch, heads, seq, head_dim).permute(0, 2, 1, 3)                  # [B, S, H, D]
    return out.to(query.dtype).contiguous()


def _attend_partitioned(q, keys, values, blocked, scale, softcap, partition_len, key_pos, query_pos, bias=None,
                        sink=None):
    """Online-softmax attention over key partitions; returns [B, KVH, G*S, D] in float32."""
    rows = q.shape[:3]
    if sink is None:
        running_max = torch.full(rows, float("-inf"))                                 # [B, KVH, G*S]
        denominator = torch.zeros(rows)                                               # [B, KVH, G*S]
    else:                                                                             # the sink's own term
        running_max, denominator = sink.clone(), torch.ones(rows)
    accumulator = torch.zeros(*rows, q.shape[-1])                                     # [B, KVH, G*S, D]
    last_needed = int(query_pos.max()) if query_pos.numel() else -1
    for start in range(0, keys.shape[2], partition_len):
        if int(key_pos[:, start].min()) > last_needed:                                # nothing causal left
            break
        stop = start + partition_len
        scores = _scores(q, keys[:, :, start:stop], scale, softcap, None if bias is None else bias[..., start:stop])
        scores = scores.masked_fill(blocked[..., start:stop], float("-inf"))        # [B, KVH, G*S, P]
        new_max = torch.maximum(running_max, scores.amax(dim=-1))
        safe_max = torch.where(torch.isinf(new_max), torch.zeros_like(new_max), new_max)
        correction = torch.exp(running_max - safe_max)                                # 0 when running_max=-inf
        weights = torch.exp(scores - safe_max[..., None])                             # [B, KVH, G*S, P]
        denominator = denominator * correction + weights.sum(dim=-1)
        accumulator = accumulator * correction[..., None] + torch.matmul(weights, values[:, :, start:stop].float())
        running_max = new_max
    return accumulator / denominator.clamp(min=1e-30)[..., None]
