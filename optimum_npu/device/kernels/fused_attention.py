"""Plain masked attention (no softcap, bias, sinks or partitions) as one fused PyTorch call.

The same arithmetic as ``attention_math``'s masked softmax, in float32, but through
``torch.nn.functional.scaled_dot_product_attention``: a single host operator instead of a chain
of matmul, mask, softmax and matmul, which is what a decode step's attention costs on the host.
What only depends on the call's positions is planned once per graph call (``CallMemo``): the
boolean mask (none when every query sees every key, as in a decode step whose rows share a
context length), the rows no key is visible to (padding queries: zeros, as the masked softmax
gives), and how many leading query columns hold a real token (a prefill chunk's padding tail is
not computed). Host-only: the device's cost model never sees which path ran.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from optimum_npu.device.kernels.attention_mask import allowed_mask
from optimum_npu.device.kernels.call_memo import CallMemo


class FusedPlan(NamedTuple):
    """What the fused path derives from a call's key/query positions (shared by all its layers)."""

    columns: int                      # leading query columns with a real token (S' <= S)
    mask: torch.Tensor | None         # [B, 1, G*S', T] bool, True = attend; None: every key is visible
    dead: torch.Tensor | None         # [B, 1, G*S', 1] bool: rows that see no key (output 0); None: none


#: The plan of the last call (every layer of a graph call shares its positions).
_PLANS = CallMemo()


def fused_attend(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, key_pos: torch.Tensor,
                 query_pos: torch.Tensor, scale: float, window: int = 0) -> torch.Tensor:
    """query [B, S, H, D]; keys/values [B, KVH, T, D]; key_pos [B, T]; query_pos [B, S] (-1 = padding) ->
    [B, S, H, D]: causal attention (inside ``window`` when > 0) in float32, cast back to the query's dtype."""
    batch, seq, heads, head_dim = query.shape
    kv_heads = keys.shape[1]
    group = heads // kv_heads
    plan = _PLANS.get((key_pos, query_pos), (window, group),
                      lambda: _plan(allowed_mask(key_pos, query_pos, window), group))
    used = plan.columns
    if used == 1:                                                                    # a decode step: views
        q = (query if seq == 1 else query[:, :1]).reshape(batch, kv_heads, group, head_dim)  # [B, KVH, G, D]
    else:
        q = query[:, :used].permute(0, 2, 1, 3).reshape(batch, kv_heads, group * used, head_dim)  # [B, KVH, G*S', D]
    out = F.scaled_dot_product_attention(_float(q), _float(keys), _float(values), attn_mask=plan.mask,
                                         scale=scale)                                # [B, KVH, G*S', D]
    if plan.dead is not None:
        out = out.masked_fill(plan.dead, 0.0)                                        # padding queries -> 0
    if used == 1:
        out = out.view(batch, 1, heads, head_dim)                                    # [B, 1, H, D]
    else:
        out = out.view(batch, heads, used, head_dim).transpose(1, 2)                 # [B, S', H, D]
    if used == seq:
        return out.contiguous() if out.dtype == query.dtype else out.to(query.dtype).contiguous()
    result = query.new_zeros(query.shape)                                            # [B, S, H, D]
    result[:, :used] = out
    return result


def _float(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float32 else x.float()


def _plan(allowed: torch.Tensor, group: int) -> FusedPlan:
    """allowed [B, S, T] (True = attend) -> the call's ``FusedPlan``."""
    batch, seq, context = allowed.shape
    seen = allowed.any(dim=-1)                                                       # [B, S]
    real_columns = seen.any(dim=0).nonzero()
    used = int(real_columns.max()) + 1 if real_columns.numel() else 1
    allowed, seen = allowed[:, :used], seen[:, :used]
    dead = None
    if not bool(seen.all()):
        allowed = allowed.clone()
        allowed[..., 0] |= ~seen                     # any one key keeps the softmax finite; the row is zeroed after
        dead = (~seen)[:, None, None, :].expand(batch, 1, group, used).reshape(batch, 1, group * used, 1)
    mask = None
    if not bool(allowed.all()):
        mask = allowed[:, None, None].expand(batch, 1, group, used, context).reshape(batch, 1, group * used, context)
    return FusedPlan(used, mask, dead)
