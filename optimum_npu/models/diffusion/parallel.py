"""The tensor-parallel split and capture-time attention of each denoiser kind (UNet, SD3 transformer).

Export, the weightless estimate and the compile-cache check take a component's split from here; both denoisers
are captured with a head-count-free attention (``head_split``), so one graph serves every rank.
"""

from __future__ import annotations

import contextlib

from optimum_npu.compile.tensor_parallel_plan import TensorParallelPlan
from optimum_npu.models.diffusion.sd3_parallel import head_split_attention, sd3_tensor_parallel_plan
from optimum_npu.models.diffusion.unet_parallel import head_split_unet_attention, unet_tensor_parallel_plan


def component_split(kind: str, module, size: int) -> TensorParallelPlan | None:
    """The split of a ``kind`` component over ``size`` devices (None: one device)."""
    if size == 1:
        return None
    if kind == "unet":
        return unet_tensor_parallel_plan(module, size)
    if kind == "transformer":
        return sd3_tensor_parallel_plan(size)
    raise ValueError(f"a {kind} is not split across devices; only the denoiser (unet, transformer) takes "
                     "tensor_parallel_size")


def capture_attention(kind: str, module):
    """A denoiser's attentions swapped for head-count-free ones while it is captured (other kinds unchanged)."""
    if kind == "unet":
        return head_split_unet_attention(module)
    if kind == "transformer":
        return head_split_attention(module)
    return contextlib.nullcontext()
