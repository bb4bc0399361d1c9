"""The functions lockstep steps call (``lockstep_ops`` emits them): stacked values are ``[N, *rank_shape]``."""

from __future__ import annotations

from typing import Callable

import torch

from optimum_npu.device.kernels.packed_linear import onednn_linear, pack_matrix

#: A row-parallel linear runs weight-stationary (W @ xᵀ) for one row, and for up to ``STATIONARY_ROWS`` rows when
#: its shard is narrower than ``STATIONARY_MAX_INNER`` input features: a rank's shard has 1/N of the input features,
#: and the CPU BLAS streams such a narrow [out, in/N] matrix slower as x @ Wᵀ. Measured (MKL, one thread, 24 cold
#: [768, in/N] shards, W @ xᵀ time / bmm time): 0.47-0.53 at one row for in/N = 192-512, 0.83 for 1024; at 4 rows
#: 0.61-0.75 for 192-512 but 1.39 for 1024. Rounding differs from F.linear's by about 1e-6 relative (fp32 only).
STATIONARY_ROWS = 8
STATIONARY_MAX_INNER = 1024


class PackedShards:
    """A stacked linear weight [N, out, in] whose packed copies (``kernels/packed_linear``) are made on first use:
    the shards concatenated [N * out, in] for a column-parallel linear, each shard [out, in] for a row-parallel one."""

    __slots__ = ("stack", "shape", "_concatenated", "_shards", "_joined")

    def __init__(self, stack: torch.Tensor):
        self.stack, self.shape = stack, stack.shape
        self._concatenated: torch.Tensor | None = None
        self._shards: list[torch.Tensor] | None = None
        self._joined: torch.Tensor | None = None

    def concatenated(self) -> torch.Tensor:
        if self._concatenated is None:
            n, out, inner = self.shape
            self._concatenated = pack_matrix(self.stack.reshape(n * out, inner))
        return self._concatenated

    def shards(self) -> list[torch.Tensor]:
        if self._shards is None:
            self._shards = [pack_matrix(shard) for shard in self.stack.unbind(0)]
        return self._shards

    def joined(self) -> torch.Tensor:
        """The shards side by side along the input features, packed [out, N * in]: the unsharded matrix of a
        row-parallel linear."""
        if self._joined is None:
            n, out, inner = self.shape
            self._joined = pack_matrix(self.stack.permute(1, 0, 2).reshape(out, n * inner))
        return self._joined


class MergedShards:
    """Sibling column-parallel linears' stacked weights [N, out_i, in] (and biases [N, out_i] or [out_i]) as one
    packed matrix [sum_i N * out_i, in] (projection-major, then rank), made on first use (``linear_merging``)."""

    __slots__ = ("weights", "biases", "widths", "_packed")

    def __init__(self, weights: list[torch.Tensor], biases: list[torch.Tensor] | None):
        self.weights, self.biases = weights, biases
        self.widths = [w.shape[1] for w in weights]
        self._packed: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def packed(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._packed is None:
            n = self.weights[0].shape[0]
            weight = pack_matrix(torch.cat([w.reshape(-1, w.shape[-1]) for w in self.weights]))
            bias = None if self.biases is None else torch.cat(
                [b.reshape(-1) if b.dim() == 2 else b.repeat(n) for b in self.biases])
            self._packed = weight, bias
        return self._packed


def merged_column_linear(linear: Callable, x: torch.Tensor, merged: MergedShards) -> torch.Tensor:
    """x [..., in] shared -> [..., sum_i N * out_i]: one ``linear`` over every sibling's shards."""
    weight, bias = merged.packed()
    return linear(x, weight, bias)


def rank_columns(y: torch.Tensor, start: int, width: int, n: int) -> torch.Tensor:
    """Columns ``start:start + n * width`` of a merged product y [..., total] as a stacked value [N, ..., width]
    (a view)."""
    return y.narrow(-1, start, n * width).unflatten(-1, (n, width)).movedim(-2, 0)


def insert_dims(x: torch.Tensor, count: int) -> torch.Tensor:
    """[N, *s] -> [N, 1 (``count`` times), *s] (a view)."""
    return x[(slice(None),) + (None,) * count]


def expanded(x: torch.Tensor, n: int) -> torch.Tensor:
    """A shared value as every rank's: [*s] -> [N, *s] (a view)."""
    return x.expand(n, *x.shape)


def column_linear(linear: Callable, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x [..., in] shared; weight [N, out, in]; bias [N, out] or [out] -> [N, ..., out]: one ``linear`` (the device's
    kernel) over the shards, concatenated."""
    n, out, inner = weight.shape
    if type(weight) is PackedShards:
        concatenated = weight.concatenated()                                                    # packed [N*out, in]
    elif not weight.is_contiguous():    # read through a transpose (GPT-2's Conv1D [in, out]): a batched product
        return row_linear(x.expand(n, *x.shape), weight, bias)
    else:
        concatenated = weight.view(n * out, inner)
    if bias is not None:   # [N, out], or one bias every rank holds alike [out]
        bias = bias.reshape(n * out) if bias.dim() == 2 else bias.repeat(n)
    y = linear(x, concatenated, bias)                                                           # [..., N*out]
    return y.view(*y.shape[:-1], n, out).movedim(-2, 0)


def row_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x [N, ..., in]; weight [N, out, in] (or its ``PackedShards``); bias [N, out] or [out] -> [N, ..., out]: one
    batched matmul, weight-stationary (W @ xᵀ) for the few rows of a decode step in fp32; packed shards take one
    packed product per rank for two rows or more (measured in a TP=4 batch-1 generate(): 4 oneDNN calls per linear
    made the host time 1.20x TP=1's, against 0.84x with the batched product)."""
    n, out, inner = weight.shape
    rows = x.reshape(n, -1, inner)                                                       # [N, M, in]
    count = rows.shape[1]
    if type(weight) is PackedShards and count == 1:   # one row: the batched product below on the plain stack is faster
        weight = weight.stack                         # than N oneDNN calls on narrow shards
    if type(weight) is PackedShards:                                                     # one packed product per rank
        biases = [None] * n if bias is None else (bias.unbind(0) if bias.dim() == 2 else [bias] * n)
        y = torch.stack([onednn_linear(part, shard, b) for part, shard, b in zip(rows, weight.shards(), biases)])
    elif x.dtype == torch.float32 and (count == 1 or count <= STATIONARY_ROWS and inner < STATIONARY_MAX_INNER):
        y = torch.matmul(weight, rows.transpose(1, 2)).transpose(1, 2)                  # [N, M, out]
        if bias is not None:
            y = y + bias.unsqueeze(-2)
    elif bias is None:
        y = torch.bmm(rows, weight.transpose(1, 2))
    else:
        y = torch.baddbmm(bias.unsqueeze(-2), rows, weight.transpose(1, 2))
    return y.reshape(*x.shape[:-1], out)


def reduced_row_linear(linear: Callable, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A row-parallel linear whose only reader is an all-reduce, both at once: x [N, ..., in] (rank r's input
    features), weight [N, out, in] (or its ``PackedShards``) -> the sum over the ranks [..., out]. Over packed
    shards it is one product of the ranks' inputs side by side by the joined shards (``linear``: the device's
    kernel), which sums the same terms in one pass instead of rank by rank (rounding differs, about 1e-6
    relative in fp32); over a plain stack, and for one row (``row_linear``'s batched product is as fast there:
    a TP=2 batch-1 generate() took 1.74 s that way, 1.91 s joined), the rank-by-rank products and the
    all-reduce's sum."""
    if type(weight) is not PackedShards or x[0].numel() == x.shape[-1]:
        return sum_over_ranks(row_linear(x, weight, None))
    joined = x.movedim(0, -2).flatten(-2)                                              # [..., N * in]
    return linear(joined, weight.joined(), None)


def sum_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """x [N, ...] -> rank 0's value plus every other rank's, in rank order (``InProcessGroup``'s all-reduce)."""
    parts = x.unbind(0)
    total = parts[0] + parts[1]
    for part in parts[2:]:
        total += part
    return total


def cat_over_ranks(x: torch.Tensor, dim: int) -> torch.Tensor:
    """x [N, ...] -> the ranks' values concatenated along ``dim`` in rank order (``InProcessGroup``'s all-gather)."""
    return torch.cat(x.unbind(0), dim=dim)


def fold_heads(x: torch.Tensor, dim: int) -> torch.Tensor:
    """[N, ..., heads_r (at per-rank ``dim``), ...] -> [..., N * heads_r, ...], rank-major heads."""
    return x.movedim(0, dim).flatten(dim, dim + 1)


def fold_cache(cache: torch.Tensor) -> torch.Tensor:
    """The ranks' caches [rows, N, heads_r, ...] as one cache [rows, N * heads_r, ...] (a view)."""
    return cache.flatten(1, 2)


def unfold_heads(x: torch.Tensor, n: int) -> torch.Tensor:
    """[B, S, N * H_r, D] -> [N, B, S, H_r, D] (a view)."""
    return x.unflatten(2, (n, x.shape[2] // n)).movedim(2, 0)
