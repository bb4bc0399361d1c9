"""The simulated NPU's own kernels, registered as ``torch.ops.npu.*`` operators.

Model wrappers and compiler passes emit them, so each kernel is a single node in the
compiled graph; the device runs the same implementation.
"""

from optimum_npu.device.kernels import collectives  # noqa: F401  (registers npu.all_reduce / npu.all_gather)
from optimum_npu.device.kernels.dense_attention import dense_attention_kernel
from optimum_npu.device.kernels.linear import linear_kernel
from optimum_npu.device.kernels.cross_attention import cross_attention_kernel
from optimum_npu.device.kernels.batch_norm import inference_batch_norm
from optimum_npu.device.kernels.moe import moe_experts_kernel, moe_kernel
from optimum_npu.device.kernels.paged_attention import paged_attention_kernel
from optimum_npu.device.kernels.quantized_linear import quantized_linear_kernel
from optimum_npu.device.kernels.segment_attention import segment_attention_kernel
from optimum_npu.device.kernels.sliding_window_attention import sliding_window_attention_kernel
from optimum_npu.schema import ALL_GATHER, ALL_REDUCE, ALL_TO_ALL, MOE_DISPATCH

#: Direct implementations the executor calls, bypassing the dispatcher (same arithmetic, but for the linear
#: kernel's weight-stationary order: rounding differences of ~1e-6 in fp32).
KERNELS = {
    "npu.paged_attention.default": paged_attention_kernel,
    "npu.sliding_window_attention.default": sliding_window_attention_kernel,
    "npu.segment_attention.default": segment_attention_kernel,
    "npu.quantized_linear.default": quantized_linear_kernel,
    "npu.moe.default": moe_kernel,
    "npu.moe_experts.default": moe_experts_kernel,
    "npu.dense_attention.default": dense_attention_kernel,   # diffusion
    # seq2seq family: decoder attention over per-sequence encoder keys/values
    "npu.cross_attention.default": cross_attention_kernel,
    # vision encoders: batch norm with the running statistics only (never training mode)
    "aten.batch_norm.default": inference_batch_norm,
    # host speed (issue 19): weight-stationary fp32 linears for the few rows of a decode step
    "aten.linear.default": linear_kernel,
}
#: Kernels whose cost depends on the run-time context (costed per call by the cost model).
ATTENTION_OPS = ("npu.paged_attention.default", "npu.sliding_window_attention.default")
#: Attention over a static bucket: costed from its shapes, scores kept on chip.
SEGMENT_ATTENTION = "npu.segment_attention.default"
#: Collectives inserted by the tensor- and expert-parallel passes; the runtime binds them per rank.
COLLECTIVE_OPS = (ALL_REDUCE, ALL_GATHER, MOE_DISPATCH, ALL_TO_ALL)
#: A linear layer over quantized weights and their scales (``quantized_linear``).
QUANTIZED_LINEAR = "npu.quantized_linear.default"
#: Mixture-of-experts feed-forward: routing, experts and weighted combine (``moe``).
MOE = "npu.moe.default"
#: The experts of one rank under expert parallelism (``moe_experts``).
MOE_EXPERTS = "npu.moe_experts.default"
#: Non-causal attention over a static bucket (diffusion models, text encoders): costed from its shapes.
DENSE_ATTENTION = "npu.dense_attention.default"
#: Decoder cross-attention over the per-slot encoder keys/values of encoder-decoder models (``cross_attention``).
CROSS_ATTENTION = "npu.cross_attention.default"
