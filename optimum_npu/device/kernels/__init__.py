"""The simulated NPU's own kernels, registered as ``torch.ops.npu.*`` operators.

Model wrappers call them while being captured, so each kernel appears as a single
node in the compiled graph; the device runs the same registered implementation.
"""

from optimum_npu.device.kernels import paged_attention  # noqa: F401  (registers torch.ops.npu.*)
