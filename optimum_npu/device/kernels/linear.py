"""``aten.linear`` on the simulated device: weight-stationary for the few rows of a decode step,
and only the real rows of a padded call.

``F.linear`` computes ``x @ Wᵀ``; for 2 to 8 rows of fp32 the CPU BLAS streams the weight far
less efficiently that way than as ``W @ xᵀ`` (the weight as the left operand, the activations
as a narrow right one). Both read every weight once, so a decode step is bound by the weight
bytes; measured on the development CPU (MKL, one thread) over the 76M benchmark model's
matrices at 4 rows: ``W @ xᵀ`` 1.5-2.4x faster for inner sizes of 256-768, but 2x slower for
the 2048-wide inner size of the MLP's down projection, which keeps ``F.linear``
(``docs/benchmarks.md``). One row and many rows (prefill, encoders) keep ``F.linear`` too.

The summation order of ``W @ xᵀ`` differs from ``F.linear``'s, so results differ by rounding
(about 1e-6 relative in fp32); one row keeps ``F.linear``'s values exactly. Inside
``real_rows`` (a padded prefill chunk or decode batch), only the real rows are computed and the
padding rows are zeros.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from optimum_npu.device.kernels.real_rows import real_row_count

#: Rows (tokens x batch) for which the weight-stationary product is used.
STATIONARY_ROWS = range(2, 9)
#: Inner sizes (``in_features``) below which it is used; wider ones keep ``F.linear``.
STATIONARY_MAX_INNER = 2048


def linear_kernel(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """input [..., K]; weight [N, K]; bias [N] -> [..., N] (contiguous)."""
    tensors = isinstance(input, torch.Tensor) and isinstance(weight, torch.Tensor) and (
        bias is None or isinstance(bias, torch.Tensor))
    if not tensors or weight.dim() != 2 or input.dim() < 2 or input.shape[-1] != weight.shape[1] or input.dtype != weight.dtype:
        return F.linear(input, weight, bias)   # what the dispatcher would do (and the errors it would raise)
    inner, width = weight.shape[1], weight.shape[0]
    rows = input.numel() // inner if inner else 0
    real = real_row_count(input.shape[:-1])
    if real is None or real >= rows:
        if rows not in STATIONARY_ROWS:
            return F.linear(input, weight, bias)
        return _rows(input.reshape(rows, inner), weight, bias).view(*input.shape[:-1], width)
    out = input.new_zeros(rows, width)                                            # [rows, N]
    out[:real] = _rows(input.reshape(rows, inner)[:real], weight, bias)           # padding rows stay 0
    return out.view(*input.shape[:-1], width)


def _rows(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x [M, K] @ weightᵀ (+ bias) -> [M, N] contiguous, weight-stationary when that is the faster order."""
    if (x.shape[0] not in STATIONARY_ROWS or weight.shape[1] >= STATIONARY_MAX_INNER
            or x.dtype is not torch.float32):
        return F.linear(x, weight, bias)
    out = torch.mm(weight, x.t()).t().contiguous()                               # [M, N]
    if bias is not None:
        out += bias
    return out
