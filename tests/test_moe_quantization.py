"""Quantized routed experts (the ``quantization`` knob reaches ``npu.moe``): each expert's gate/up and down are
stored as int8 / int4 / fp8 values plus scales, and the compiled model is eager Transformers on the dequantised
weights: greedy tokens identical, logits within 1e-4 (the kernel dequantises exactly the values the reference
holds, so only the float32 summation order differs, as for unquantized parity), while the distance to the
full-precision model is the quantization error itself. Expert parallelism and experts split by intermediate
size take the quantized tensors' shards."""

from __future__ import annotations

import pytest
import torch

from optimum_npu import NPUModelForCausalLM
from optimum_npu.compile.quantize_experts import quantize_stacked
from optimum_npu.device.kernels.quantized_linear import dequantize_weight, quantize_weight
from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.models.tiny import build_causal_lm, build_tokenizer
from marks import first_fast
from tests.test_architectures import BATCH_PROMPTS, GREEDY, assert_same_generation

KNOBS = {"max_seq_len": 128, "batch_size": 4, "decoder_batch_sizes": [1, 4], "prefill_chunk_size": 16,
         "npu": "rngd"}
GROUP = 16
STORED = {"int8": torch.int8, "int4": torch.uint8, "fp8": torch.float8_e4m3fn}


def _fake_quantized(weight: torch.Tensor, fmt: str) -> torch.Tensor:
    """A [N, K] weight as the device computes with it: quantized, then dequantised."""
    return dequantize_weight(*quantize_weight(weight, fmt, GROUP), weight.dtype)


def dequantised_reference(reference, fmt: str):
    """A copy of ``reference`` holding the values the compiled model computes with: every linear but the logits
    projection and every expert's gate/up and down quantized and dequantised (routers stay as they are)."""
    model = type(reference)(reference.config).eval()
    model.load_state_dict(reference.state_dict())
    transposed = model.config.model_type == "gpt_oss"      # experts stored [E, H, 2I] / [E, I, H]
    with torch.no_grad():
        for name, module in model.named_modules():
            if name == "lm_head":
                continue
            if isinstance(module, torch.nn.Linear):
                module.weight.copy_(_fake_quantized(module.weight, fmt))
            if name.endswith("mlp.experts"):
                for weight in (module.gate_up_proj, module.down_proj):
                    stacked = weight.transpose(1, 2) if transposed else weight           # [E, out, in]
                    values, scales = quantize_stacked(stacked, fmt, GROUP)
                    restored = torch.stack([dequantize_weight(v, s, weight.dtype) for v, s in zip(values, scales)])
                    weight.copy_(restored.transpose(1, 2) if transposed else restored)
    return model


@pytest.mark.parametrize("architecture, fmt, layout", first_fast([
    ("GptOssForCausalLM", "int8", {}),
    ("MixtralForCausalLM", "fp8", {"tensor_parallel_size": 2, "expert_parallel_size": 2}),
    ("Qwen2MoeForCausalLM", "int4", {"tensor_parallel_size": 2, "expert_tensor_parallel": True}),
    ("GptOssForCausalLM", "int8", {"tensor_parallel_size": 2, "expert_tensor_parallel": True}),
], ids=["gpt-oss-int8", "mixtral-fp8-ep2", "qwen2-moe-int4-etp2", "gpt-oss-int8-etp2"]))
def test_quantized_experts_are_eager_on_the_dequantised_weights(architecture, fmt, layout):
    reference = build_causal_lm(architecture, num_key_value_heads=4)
    knobs = KNOBS | layout | {"quantization": {"weights": fmt, "group_size": GROUP}}
    model = NPUModelForCausalLM.from_model(reference, npu_config=knobs)
    try:
        inputs = build_tokenizer()(BATCH_PROMPTS, return_tensors="pt", padding=True)
        got = model.generate(**inputs, **GREEDY)
        assert_same_generation(got, dequantised_reference(reference, fmt).generate(**inputs, **GREEDY))
        with torch.no_grad():   # the quantization error is really there
            first = reference(**inputs).logits[:, -1]
        assert (got.logits[0] - first).abs().max() > 1e-4
        graph = model._runtime.engine.costs["decoder_batch_4"].index.graph
        dtypes = {spec.source: spec.dtype for spec in graph.inputs if spec.kind == "weight"}   # this rank's shards
        routers = [source for source in dtypes if source.endswith(("mlp.gate.weight", "mlp.router.weight"))]
        assert routers and all(dtypes[source] == "float32" for source in routers)
        experts = {source: dtype for source, dtype in dtypes.items() if ".experts." in source and "bias" not in source}
        assert experts and all(dtype == str(STORED[fmt]).removeprefix("torch.") for source, dtype in experts.items()
                               if source.endswith(".qweight"))
        assert not any(source.endswith(("gate_up_proj", "down_proj")) for source in experts)   # nothing left in fp32
        split = 2 if layout else 1                                   # each device holds half of the experts' values
        full_experts = sum(p.numel() * 4 for n, p in reference.named_parameters()
                           if n.endswith(("experts.gate_up_proj", "experts.down_proj"))) / split
        stored = sum(torch.Size(spec.shape).numel() * getattr(torch, spec.dtype).itemsize for spec in graph.inputs
                     if spec.kind == "weight" and ".experts." in spec.source
                     and spec.source.endswith((".qweight", ".weight_scale")))
        assert stored < 0.35 * full_experts   # 1 byte (int4: half) + a float32 scale per 16 values, vs 4 bytes
    finally:
        model.release()


def test_group_size_must_divide_each_devices_expert_features():
    reference = build_causal_lm("MixtralForCausalLM", num_key_value_heads=4, intermediate_size=96)
    knobs = KNOBS | {"tensor_parallel_size": 2, "expert_tensor_parallel": True,
                     "quantization": {"weights": "int8", "group_size": 32}}
    with pytest.raises(NPUConfigError, match=r"group_size=32 does not divide the 48 input features per device"):
        NPUModelForCausalLM.from_model(reference, npu_config=knobs)
