"""A checkpoint quantized by compressed-tensors (FP8, one scale per output channel) compiles without re-quantizing:
the artifact holds the checkpoint's own fp8 values and scales, bit for bit, and runs them."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from compressed_tensors.compressors import ModelCompressor
from compressed_tensors.quantization import (QuantizationArgs, QuantizationConfig, QuantizationScheme,
                                             apply_quantization_config)
from safetensors.torch import load_file

from optimum_npu import NPUModelForCausalLM
from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.models.decoder.prequantized import PrequantizedCheckpointError
from optimum_npu.models.tiny import build_causal_lm, build_tokenizer

BASE = {"max_seq_len": 32, "batch_size": 1, "prefill_chunk_size": 8, "npu": "rngd"}
PROMPT = torch.tensor([[1, 40, 41, 42, 43, 44, 45]])
#: Not this project's amax / 448: a re-quantization would give other bytes.
OBSERVER_QMAX = 240.0


def quantize_with_compressed_tensors(path, kv_cache_scheme=None):
    """Saves the tiny Llama (seed 0) as a compressed-tensors FP8 per-channel checkpoint (lm_head left out)."""
    logging.getLogger("compressed_tensors").setLevel(logging.ERROR)
    model = build_causal_lm("LlamaForCausalLM", "tiny", seed=0)
    args = QuantizationArgs(num_bits=8, type="float", strategy="channel", symmetric=True, dynamic=False)
    config = QuantizationConfig(config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=args)},
                                ignore=["lm_head"], kv_cache_scheme=kv_cache_scheme)
    apply_quantization_config(model, config)
    with torch.no_grad():  # the observer's job (llm-compressor): a static scale per output channel
        for module in model.modules():
            if hasattr(module, "weight_scale"):
                module.weight_scale.copy_(module.weight.abs().amax(1, keepdim=True) / OBSERVER_QMAX)
    compressor = ModelCompressor.from_pretrained_model(model, "float-quantized")
    compressor.compress_model(model)
    model.save_pretrained(path)
    compressor.update_config(path)
    build_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return quantize_with_compressed_tensors(tmp_path_factory.mktemp("fp8") / "checkpoint")


@pytest.fixture(scope="module")
def compiled(checkpoint, tmp_path_factory):
    model = NPUModelForCausalLM.from_pretrained(checkpoint, export=True, npu_config=BASE)
    artifact = tmp_path_factory.mktemp("artifact") / "npu"
    model.save_pretrained(artifact)
    model.release()
    model = NPUModelForCausalLM.from_pretrained(artifact)
    yield model, artifact
    model.release()


def test_checkpoint_values_and_scales_are_compiled_as_they_are(checkpoint, compiled):
    model, artifact = compiled
    assert json.loads((checkpoint / "config.json").read_text())["quantization_config"]["format"] == "float-quantized"
    source, stored = load_file(checkpoint / "model.safetensors"), load_file(artifact / "model.safetensors")
    layers = [key.removesuffix(".weight_scale") for key in source if key.endswith(".weight_scale")]
    assert len(layers) == 14
    for layer in layers:
        assert source[f"{layer}.weight"].dtype == torch.float8_e4m3fn
        assert torch.equal(stored[f"{layer}.qweight"].view(torch.uint8), source[f"{layer}.weight"].view(torch.uint8))
        assert torch.equal(stored[f"{layer}.weight_scale"], source[f"{layer}.weight_scale"])
        assert f"{layer}.weight" not in stored
    assert model.npu_config.quantization.weights == "fp8"


def test_compiled_model_computes_with_the_checkpoint_values(checkpoint, compiled):
    model, _ = compiled
    reference = build_causal_lm("LlamaForCausalLM", "tiny", seed=0)
    source = load_file(checkpoint / "model.safetensors")
    with torch.no_grad():
        for name, weight in reference.named_parameters():
            if f"{name}_scale" in source:
                weight.copy_(source[name].float() * source[f"{name}_scale"])
        want = reference(PROMPT).logits[0, -1]
    torch.testing.assert_close(model(PROMPT).logits[0, -1], want, atol=1e-5, rtol=0)


def test_another_weight_format_would_requantize_and_is_refused(checkpoint):
    with pytest.raises(NPUConfigError, match=r"weights='int8' would re-quantize .*already quantized \(fp8\)"):
        NPUModelForCausalLM.from_pretrained(checkpoint, export=True,
                                            npu_config={**BASE, "quantization": {"weights": "int8", "group_size": 32}})


def test_unsupported_schemes_are_refused_naming_what_is_supported(checkpoint, tmp_path):
    config = json.loads((checkpoint / "config.json").read_text())
    config["quantization_config"]["config_groups"]["group_0"]["weights"]["strategy"] = "tensor"
    copy = tmp_path / "tensor-scale"
    copy.mkdir()
    for path in checkpoint.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(PrequantizedCheckpointError, match=r"quantizes weights as .*'strategy': 'tensor'.*compiles "
                                                          r"compressed-tensors checkpoints in the 'float-quantized'"):
        NPUModelForCausalLM.from_pretrained(copy, export=True, npu_config=BASE)
