"""``aten.linear`` on the simulated device: the fastest host product for each row count, and only the real
rows of a padded call.

A decode step multiplies a few rows by every weight, so its host time is the time to stream the
weights. ``F.linear`` (``x @ Wᵀ`` through the CPU BLAS) streams them slowly for a few rows:
measured on the development CPU (one thread, the 76M benchmark model's 84 layer matrices in
sequence; ``docs/benchmarks.md``):

- a weight the engine packed at load (``packed_linear``) takes oneDNN's product on any row count:
  at 4 rows 1.7x ``F.linear``, at 128 (a prefill chunk) 1.3x;
- 2-8 rows on a plain weight of 512 KiB or more (packing off, or no room for it) run weight-stationary,
  ``W @ xᵀ``, for inner sizes below 2048 (1.5-2.4x per matrix; 0.4x for the 2048-wide down projection,
  which keeps ``F.linear``);
- everything else takes ``F.linear`` (small weights: its per-call cost is the lowest).

Every path but ``F.linear`` sums in another order, so results differ by rounding (about 1e-6
relative in fp32); other dtypes keep ``F.linear`` and its values exactly. Inside ``real_rows`` (a
padded prefill chunk or decode batch), only the real rows are computed and the padding rows are
zeros.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from optimum_npu.device.kernels.packed_linear import onednn_linear
from optimum_npu.device.kernels.real_rows import real_row_count

#: Rows (tokens x batch) for which the weight-stationary product is used on a plain weight.
STATIONARY_ROWS = range(2, 9)
#: Inner sizes (``in_features``) below which it is used; wider ones keep ``F.linear``.
STATIONARY_MAX_INNER = 2048
#: Plain weights smaller than this take ``F.linear`` for 2-8 rows too (its per-call cost is the lowest).
STATIONARY_MIN_BYTES = 512 * 1024
#: False: plain weights take ``F.linear`` on every row count (the execution before issue #19; an A/B switch).
FAST_PRODUCTS = True


def linear_kernel(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """input [..., K]; weight [N, K] (plain or packed); bias [N] -> [..., N] (contiguous)."""
    tensors = isinstance(input, torch.Tensor) and isinstance(weight, torch.Tensor) and (
        bias is None or isinstance(bias, torch.Tensor))
    if tensors and weight.is_mkldnn:
        if input.dim() < 1 or input.shape[-1] != weight.shape[1] or input.shape[-1] == 0:
            return F.linear(input, weight.to_dense(), bias)   # the dispatcher's errors, on the plain weight
        return _real_rows_of(input, weight, bias, onednn_linear)
    if not tensors or weight.dim() != 2 or input.dim() < 2 or input.shape[-1] != weight.shape[1] or \
            input.dtype != weight.dtype or input.shape[-1] == 0:
        return F.linear(input, weight, bias)   # what the dispatcher would do (and the errors it would raise)
    return _real_rows_of(input, weight, bias, _rows)


def _real_rows_of(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, product) -> torch.Tensor:
    """``product`` over the real rows of a padded call (zeros in the padding rows), over every row otherwise."""
    inner, width = input.shape[-1], weight.shape[0]
    rows = input.numel() // inner
    flat = input.reshape(rows, inner)                                             # [rows, K]
    real = real_row_count(input.shape[:-1])
    if real is None or real >= rows:
        return product(flat, weight, bias).view(*input.shape[:-1], width)
    out = input.new_zeros(rows, width)                                            # [rows, N]
    out[:real] = product(flat[:real], weight, bias)                               # padding rows stay 0
    return out.view(*input.shape[:-1], width)


def _rows(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x [M, K] @ plain weightᵀ (+ bias) -> [M, N] contiguous, by the faster product for M rows."""
    if x.dtype is not torch.float32 or not FAST_PRODUCTS:
        return F.linear(x, weight, bias)
    if x.shape[0] not in STATIONARY_ROWS or weight.shape[1] >= STATIONARY_MAX_INNER or \
            weight.numel() * 4 < STATIONARY_MIN_BYTES:
        return F.linear(x, weight, bias)
    out = torch.mm(weight, x.t()).t().contiguous()                               # [M, N]
    if bias is not None:
        out += bias
    return out
