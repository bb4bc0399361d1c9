"""Quantized compiles: real arithmetic (parity with eager Transformers on the dequantised weights), packed weights
stored once, memory reserved by the expected ratio, simulated speed, tensor parallelism, and tampering refused."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from optimum_npu import NPUModelForCausalLM
from optimum_npu.compile.artifact import ArtifactError, write_manifest
from optimum_npu.device.kernels.quantized_linear import dequantize_weight, quantize_weight
from optimum_npu.device.timeline import DEQUANTIZE
from optimum_npu.models.decoder.npu_config import NPUConfigError
from marks import first_fast

GROUP = 32
KNOBS = {"int8": {"quantization": {"weights": "int8", "group_size": GROUP}},
         "int4": {"quantization": {"weights": "int4", "group_size": GROUP}},
         "fp8": {"npu": "rngd", "quantization": {"weights": "fp8"}}}
#: Stored bytes per weight value, and per scale (float32 scales: the tests compile in float32).
VALUE_BYTES = {"int8": 1.0, "int4": 0.5, "fp8": 1.0}
PROMPT = torch.tensor([[1, 40, 41, 42, 43, 44, 45]])


@pytest.fixture(scope="module", params=first_fast(KNOBS))
def quantized(request, make_compiled):
    return request.param, make_compiled("LlamaForCausalLM", KNOBS[request.param])


def quantized_linears(hf_model) -> dict[str, torch.Tensor]:
    """Weights of the linears the pass quantizes: every nn.Linear but the logits projection."""
    return {f"{name}.weight": module.weight for name, module in hf_model.named_modules()
            if isinstance(module, torch.nn.Linear) and name != "lm_head"}


def test_outputs_are_eager_transformers_on_the_dequantised_weights(quantized, llama):
    fmt, pair = quantized
    ref = pair.ref
    dequantised = type(ref)(ref.config).eval()
    dequantised.load_state_dict(ref.state_dict())
    with torch.no_grad():
        for name, weight in quantized_linears(dequantised).items():
            weight.copy_(dequantize_weight(*quantize_weight(weight, fmt, GROUP), weight.dtype))
        want = dequantised(PROMPT).logits[0, -1]
        exact = ref(PROMPT).logits[0, -1]
    got = pair.model(PROMPT).logits[0, -1]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert (got - exact).abs().max() > 1e-4  # the quantization error is really there


def test_artifact_stores_packed_values_and_scales_once(quantized):
    fmt, pair = quantized
    stored = load_file(pair.artifact / "model.safetensors")
    linears = quantized_linears(pair.ref)
    for name, weight in linears.items():
        layer = name.removesuffix(".weight")
        assert name not in stored  # the full-precision copy is gone
        values, scale = quantize_weight(weight.detach(), fmt, GROUP)
        assert torch.equal(stored[f"{layer}.qweight"].view(torch.uint8), values.view(torch.uint8))
        assert torch.equal(stored[f"{layer}.weight_scale"], scale)
    assert stored["lm_head.weight"].dtype == torch.float32  # the logits projection stays unquantized
    graphs = [json.loads(p.read_text()) for p in (pair.artifact / "graphs").glob("*.graph.json")]
    sources = {spec["source"] for doc in graphs for spec in doc["inputs"] if spec["kind"] == "weight"}
    assert sources == set(stored) and len(graphs) == 4  # every graph binds the one stored copy


def test_memory_reserved_shrinks_by_the_expected_ratio(quantized, llama):
    fmt, pair = quantized
    linears = quantized_linears(pair.ref)
    values = sum(w.numel() for w in linears.values())
    scales = sum(w.shape[0] * (1 if fmt == "fp8" else w.shape[1] // GROUP) for w in linears.values())
    base = llama.model._runtime.engine.reservations()[0]["weights"]
    expected = base - 4 * values + int(values * VALUE_BYTES[fmt]) + 4 * scales
    reserved = pair.model._runtime.engine.reservations()[0]
    assert reserved["weights"] == expected < base
    assert reserved["kv_cache"] == llama.model._runtime.engine.reservations()[0]["kv_cache"]


def decode_timeline(model):
    return model._runtime.costs["decoder_batch_1"].timeline(torch.tensor([[100]]))


def test_simulated_decode_reads_fewer_bytes_and_int4_dequantises_on_atom(quantized, llama):
    fmt, pair = quantized
    events = decode_timeline(pair.model)
    dequantize = sum(e.duration_s for e in events if e.category == DEQUANTIZE)
    assert (dequantize > 0) == (fmt == "int4")  # atom has an int8 engine, rngd an fp8 one, no preset int4
    graph = pair.model._runtime.engine.graphs["decoder_batch_1"]
    quantized_nodes = {node.name for node in graph.nodes if node.op == "npu.quantized_linear.default"}
    assert len(quantized_nodes) == 2 * 7  # q, k, v, o, gate, up, down per layer

    def linear_bytes(timeline):  # the units (ops or fused groups) holding the quantized linears, by node name
        return sum(e.args["bytes"] for e in timeline if e.category != DEQUANTIZE  # (a share of the same unit)
                   and quantized_nodes & set(e.args.get("nodes", "").split(",")))

    # float32 weights (4 bytes) -> int4 0.5 + 4 / 32 bytes of scale, int8 / fp8 1 + scales, plus activations
    ratio = linear_bytes(events) / linear_bytes(decode_timeline(llama.model))
    assert ratio < (0.2 if fmt == "int4" else 0.32)
    if fmt != "fp8":  # same spec (atom): the quantized decode step is faster
        seconds = pair.model._runtime.costs["decoder_batch_1"].call_seconds(torch.tensor([[100]]))[0]
        assert seconds < llama.model._runtime.costs["decoder_batch_1"].call_seconds(torch.tensor([[100]]))[0]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["int8", "int4", "fp8"])
def test_tensor_parallel_shards_are_the_one_device_quantized_tensors(make_compiled, fmt):
    one = make_compiled("LlamaForCausalLM", KNOBS[fmt])
    two = make_compiled("LlamaForCausalLM", {**KNOBS[fmt], "tensor_parallel_size": 2})
    full = load_file(one.artifact / "model.safetensors")
    ranks = [load_file(two.artifact / f"model-tp{rank}-of-2.safetensors") for rank in range(2)]
    for layer, dim in (("self_attn.q_proj", 0), ("mlp.gate_proj", 0), ("self_attn.o_proj", 1), ("mlp.down_proj", 1)):
        for suffix in ("qweight", "weight_scale"):
            name = f"model.layers.1.{layer}.{suffix}"
            whole = full[name]
            if suffix == "weight_scale" and dim == 1 and whole.shape[1] == 1:  # per-channel scale: replicated
                pieces = [whole, whole]
            else:
                pieces = whole.chunk(2, dim)
            for rank in range(2):
                assert torch.equal(ranks[rank][name].view(torch.uint8), pieces[rank].contiguous().view(torch.uint8))
    want = one.model.generate(PROMPT, max_new_tokens=8, do_sample=False)
    assert torch.equal(two.model.generate(PROMPT, max_new_tokens=8, do_sample=False), want)
    torch.testing.assert_close(two.model(PROMPT).logits, one.model(PROMPT).logits, atol=1e-5, rtol=0)


# ---- tampering ---------------------------------------------------------------------------------------
@pytest.fixture
def copy(make_compiled, tmp_path):
    pair = make_compiled("LlamaForCausalLM", KNOBS["int4"])
    return shutil.copytree(pair.artifact, tmp_path / "copy")


def test_tampered_packed_weights_are_refused(copy):
    path = copy / "model.safetensors"
    tensors = load_file(path)
    name = "model.layers.0.mlp.down_proj.qweight"
    tensors[name] = tensors[name] ^ 0x11
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(ArtifactError, match="model.safetensors does not match its sha256"):
        NPUModelForCausalLM.from_pretrained(copy)
    write_manifest(copy)  # an attacker re-signs: the values load (they are data), the dtype/shape check still holds
    tensors[name] = tensors[name].to(torch.float32)
    save_file(tensors, str(path), metadata=metadata)
    write_manifest(copy)
    with pytest.raises(ArtifactError, match=rf"needs weight '{name}' \[64, 64\] uint8"):
        NPUModelForCausalLM.from_pretrained(copy)


@pytest.mark.parametrize("knob, message", [
    ({"weights": "int4", "group_size": 3}, "group_size=3 is invalid"),
    ({"weights": "int4", "group_size": 128}, "group_size=128 does not divide the 64 input features"),
    ({"weights": "int4", "group_size": 32, "backdoor": 1}, "unknown quantization key 'backdoor'"),
    ("int4", "quantization='int4' must be an object or null"),
])
def test_tampered_stored_quantization_knob_is_refused(copy, knob, message):
    path = copy / "npu_config.json"
    document = json.loads(path.read_text())
    document["quantization"] = knob
    path.write_text(json.dumps(document))
    write_manifest(copy)
    with pytest.raises(NPUConfigError, match=message) as err:
        NPUModelForCausalLM.from_pretrained(copy)
    assert "re-download it or recompile" in str(err.value)


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["GPT2LMHeadModel", "Phi3ForCausalLM", "Gemma2ForCausalLM"])
def test_other_layouts_quantize_and_split(make_compiled, architecture):
    """GPT-2's transposed Conv1D weights, Phi-3's fused qkv / gate_up projections, Gemma 2's sliding-window rings:
    int8 weights and an fp8 KV cache, on one device and split over two."""
    knobs = {"npu": "rngd", "quantization": {"weights": "int8", "kv_cache": "fp8", "group_size": GROUP}}
    one = make_compiled(architecture, knobs)
    two = make_compiled(architecture, {**knobs, "tensor_parallel_size": 2})
    graph = one.model._runtime.engine.graphs["prefill"]
    assert sum(node.op == "npu.quantized_linear.default" for node in graph.nodes) >= 2 * 3
    assert {spec.dtype for spec in graph.inputs_of_kind("kv_cache")} == {"float8_e4m3fn", "float32"}
    want = one.model.generate(PROMPT, max_new_tokens=8, do_sample=False)
    assert torch.equal(two.model.generate(PROMPT, max_new_tokens=8, do_sample=False), want)
    torch.testing.assert_close(two.model(PROMPT).logits, one.model(PROMPT).logits, atol=1e-5, rtol=0)


def test_artifact_written_before_the_knob_existed_loads_unquantized(llama, tmp_path):
    copy = shutil.copytree(llama.artifact, tmp_path / "older")
    path = copy / "npu_config.json"
    document = json.loads(path.read_text())
    del document["quantization"]
    path.write_text(json.dumps(document))
    write_manifest(copy)
    model = NPUModelForCausalLM.from_pretrained(copy)
    try:
        assert model.npu_config.quantization is None
        assert torch.equal(model.generate(PROMPT, max_new_tokens=4, do_sample=False),
                           llama.model.generate(PROMPT, max_new_tokens=4, do_sample=False))
    finally:
        model.release()
