"""Which cached keys a query may attend to: causal, optionally inside a sliding window."""

from __future__ import annotations

import torch


def allowed_mask(key_pos: torch.Tensor, query_pos: torch.Tensor, window: int) -> torch.Tensor:
    """key_pos [B, T], query_pos [B, S] (-1 = invalid) -> [B, S, T]: causal, inside the window (0 = none)."""
    keys, queries = key_pos[:, None, :], query_pos[:, :, None]
    allowed = (keys >= 0) & (keys <= queries) & (queries >= 0)
    if window:
        allowed &= (queries - keys) < window
    return allowed
