"""The quantization knob's errors, and the formats' arithmetic: dequantise(quantise(w)) within each format's error."""

from __future__ import annotations

import pytest
import torch

from optimum_npu import NPUModelForCausalLM
from optimum_npu.compile.quantization_config import QuantizationConfig, QuantizationConfigError
from optimum_npu.device.kernels.kv_quant import load_kv, store_kv
from optimum_npu.device.kernels.quantized_linear import dequantize_weight, quantize_weight
from optimum_npu.models.decoder.npu_config import NPUConfigError, NPUDecoderConfig

BASE = {"max_seq_len": 32, "batch_size": 1, "prefill_chunk_size": 8}


# ---- the knob -------------------------------------------------------------------------------------
def test_unknown_key_suggests_the_closest_one():
    with pytest.raises(NPUConfigError, match=r"unknown quantization key 'group' \(did you mean 'group_size'\?\)"):
        NPUDecoderConfig(quantization={"weights": "int8", "group": 64})


@pytest.mark.parametrize("knob, message", [
    ({"weights": "in8"}, r"weights='in8' is not supported \(did you mean 'int8'\?\); choose one of "
                          r"\['int8', 'int4', 'fp8', None\]"),
    ({"kv_cache": "int8"}, r"kv_cache='int8' is not supported; choose one of \['fp8', None\]"),
    ({"weights": "int8", "format": "gptq"}, r"format='gptq' is not supported; choose one of \['rtn'\]"),
    ({"weights": "int8", "group_size": 0}, r"group_size=0 is invalid: it must be an even integer >= 2"),
    ({"weights": "int4", "group_size": 33}, r"group_size=33 is invalid"),
    ({"weights": "int8", "group_size": True}, r"group_size=True is invalid"),
    ({}, r"quantizes nothing"),
    ([1], r"quantization must be a dict"),
])
def test_invalid_values_are_refused_with_the_allowed_ones(knob, message):
    with pytest.raises(NPUConfigError, match=message):
        NPUDecoderConfig(quantization=knob)


def test_knob_forms_and_round_trip():
    config = NPUDecoderConfig(quantization="int4")
    assert config.quantization == QuantizationConfig(weights="int4")
    stored = config.to_dict()["quantization"]
    assert stored == {"weights": "int4", "kv_cache": None, "group_size": 128, "format": "rtn"}
    assert NPUDecoderConfig(quantization=stored).quantization == config.quantization


def test_group_size_must_divide_each_layers_input_features_before_any_capture(make_checkpoint, monkeypatch):
    from optimum_npu.models.decoder import export

    monkeypatch.setattr(export, "capture_graphs", lambda *a, **k: pytest.fail("captured before the knob check"))
    checkpoint = make_checkpoint("LlamaForCausalLM")  # hidden 64, intermediate 128, 4 heads x 16
    with pytest.raises(NPUConfigError, match=r"group_size=128 does not divide the 64 input features of the q/k/v "
                                             r"and gate/up projections \(hidden_size\).*e\.g\. group_size=64"):
        NPUModelForCausalLM.from_pretrained(checkpoint, export=True, npu_config={**BASE, "quantization": {
            "weights": "int8"}})
    with pytest.raises(NPUConfigError, match=r"group_size=64 does not divide the 32 input features per device at "
                                             r"tensor_parallel_size=2 of the attention output projection"):
        NPUModelForCausalLM.from_pretrained(checkpoint, export=True, npu_config={
            **BASE, "tensor_parallel_size": 2, "quantization": {"weights": "int4", "group_size": 64}})


def test_pass_names_the_layer_whose_input_features_the_group_does_not_divide():
    from optimum_npu.compile.quantize import _quantize_source

    weights = {"model.layers.0.mlp.down_proj.weight": torch.zeros(8, 48)}
    with pytest.raises(QuantizationConfigError, match=r"does not divide the 48 input features of layer "
                                                      r"model.layers.0.mlp.down_proj \(weight \[8, 48\]\)"):
        _quantize_source("model.layers.0.mlp.down_proj.weight", weights, QuantizationConfig("int8", group_size=32),
                         transposed=False)


@pytest.mark.parametrize("knob", [{"weights": "fp8"}, {"weights": "int8", "kv_cache": "fp8", "group_size": 32}])
def test_fp8_needs_a_spec_with_an_fp8_engine_and_the_error_names_the_presets(make_checkpoint, knob):
    key = "weights" if knob.get("weights") == "fp8" else "kv_cache"
    with pytest.raises(NPUConfigError, match=rf"{key}='fp8' needs an NPU with an fp8 data path, and 'atom' has none "
                                             r".*\(h100-sxm, h200-sxm, rebel-quad, rngd\)"):
        NPUModelForCausalLM.from_pretrained(make_checkpoint("LlamaForCausalLM"), export=True,
                                            npu_config={**BASE, "npu": "atom", "quantization": knob})


# ---- the formats' arithmetic ----------------------------------------------------------------------
@pytest.mark.parametrize("fmt, qmax", [("int8", 127), ("int4", 7)])
def test_integer_round_trip_is_within_half_a_step_of_its_group(fmt, qmax):
    torch.manual_seed(0)
    weight = torch.randn(48, 256) * torch.logspace(-2, 1, 48)[:, None]   # rows of very different ranges
    values, scale = quantize_weight(weight, fmt, group_size=64)
    assert values.dtype == (torch.int8 if fmt == "int8" else torch.uint8)
    assert values.shape == ((48, 256) if fmt == "int8" else (48, 128)) and scale.shape == (48, 4)
    restored = dequantize_weight(values, scale, torch.float32)
    step = weight.reshape(48, 4, 64).abs().amax(-1) / qmax                # one step per group
    error = (restored - weight).abs().reshape(48, 4, 64).amax(-1)
    assert torch.all(error <= step / 2 * (1 + 1e-5))
    assert torch.all(error > 0)                                           # it really was rounded
    coarser = (dequantize_weight(*quantize_weight(weight, fmt, group_size=256), torch.float32) - weight).abs()
    assert coarser.mean() > (restored - weight).abs().mean()              # smaller groups: smaller error


def test_int4_packs_two_values_per_byte_low_nibble_first():
    weight = torch.tensor([[7.0, -7.0, 0.0, 3.0]])
    values, scale = quantize_weight(weight, "int4", group_size=4)
    assert scale.item() == 1.0
    assert values.tolist() == [[(7 + 8) | ((-7 + 8) << 4), (0 + 8) | ((3 + 8) << 4)]]


def test_fp8_round_trip_is_within_the_format_relative_error_per_channel():
    torch.manual_seed(0)
    weight = torch.randn(32, 96) * torch.logspace(-3, 2, 32)[:, None]
    values, scale = quantize_weight(weight, "fp8", group_size=64)         # group size ignored: per channel
    assert values.dtype == torch.float8_e4m3fn and scale.shape == (32, 1)
    restored = dequantize_weight(values, scale, torch.float32)
    large = weight.abs() >= scale * 2 ** -6                               # normal fp8 numbers: 3 mantissa bits
    assert torch.all(((restored - weight).abs() <= weight.abs() * 2 ** -4)[large])
    assert torch.all((restored - weight).abs()[~large] <= scale.expand_as(weight)[~large] * 2 ** -9)


def test_fp8_kv_cache_stores_scaled_values_and_reads_them_back():
    torch.manual_seed(0)
    cache = torch.zeros(3, 2, 4, 16, dtype=torch.float8_e4m3fn)          # [blocks, kv heads, block, head dim]
    scales = torch.zeros(3, 2, 4)
    keys = torch.randn(5, 2, 16) * 1000                                   # beyond fp8's range without scaling
    blocks, offsets = torch.tensor([0, 0, 1, 2, 2]), torch.tensor([0, 3, 1, 2, 3])
    store_kv(cache, scales, (blocks, slice(None), offsets), keys)
    restored = load_kv(cache, scales)[blocks, :, offsets]                 # [5, 2, 16]
    assert torch.allclose(scales[blocks, :, offsets], keys.abs().amax(-1) / 448)
    assert torch.all((restored - keys).abs() <= keys.abs().amax(-1, keepdim=True) * 2 ** -4)
    assert torch.isfinite(restored).all() and restored.abs().max() > 448
