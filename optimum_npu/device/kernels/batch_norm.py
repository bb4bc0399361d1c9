"""Inference batch normalisation: the device's implementation of ``aten.batch_norm``.

A convolutional network's batch norm at inference scales each channel by its stored running
statistics. The device never trains: a graph asking for training mode (which would update the
running statistics in place, i.e. change the model's weights) is refused instead of run.
"""

from __future__ import annotations

import torch
from torch.nn import functional


class TrainingBatchNormError(ValueError):
    """A graph node asked for batch norm in training mode, which the device does not run."""


def inference_batch_norm(input: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                         running_mean: torch.Tensor | None, running_var: torch.Tensor | None, training: bool,
                         momentum: float, eps: float, cudnn_enabled: bool) -> torch.Tensor:
    """input [B, C, ...]; per-channel weight/bias/running_mean/running_var [C] -> [B, C, ...]."""
    if training or running_mean is None or running_var is None:
        raise TrainingBatchNormError("aten.batch_norm in training mode (or without running statistics) is not run "
                                     "on the device: compile the model in eval mode")
    return functional.batch_norm(input, running_mean, running_var, weight, bias, training=False, eps=eps)
