"""Mixture of experts: the ``npu.moe`` kernel against Transformers' sparse blocks, expert parallelism
(parity under EP 2 / EP 4 on both collective back ends, each rank holding only its experts), the knob's
errors and the cost of the experts a batch activates. Parity of the architectures themselves (batch 1,
left-padded batch of 3, TP 2, paged + flash + prefix caching) is in ``test_architectures.py``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from optimum_npu import NPUModelForCausalLM
from optimum_npu.device.kernels.moe import moe_kernel
from optimum_npu.device.moe_cost import expected_active_experts
from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.models.tiny import build_causal_lm, build_tokenizer
from tests.test_architectures import BATCH_PROMPTS, GREEDY, LONG_PROMPT, assert_same_generation
from optimum_npu.schema import GraphFormatError
from tests.tampering import edit_graph
from tests.test_tensor_parallel import _free_port

MOE_ARCHITECTURES = ["MixtralForCausalLM", "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM"]
KNOBS = {"max_seq_len": 128, "batch_size": 4, "decoder_batch_sizes": [1, 4], "prefill_chunk_size": 16}


def _kernel_forward(block, hidden: torch.Tensor, top_k: int, normalize: bool, cast: bool) -> torch.Tensor:
    flat = hidden.reshape(-1, hidden.shape[-1])
    logits = torch.nn.functional.linear(flat, block.gate.weight)
    out = moe_kernel(flat, logits, block.experts.gate_up_proj, block.experts.down_proj, top_k, normalize, cast)
    if hasattr(block, "shared_expert"):
        out = out + torch.sigmoid(block.shared_expert_gate(flat)) * block.shared_expert(flat)
    return out.view(hidden.shape)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("architecture, normalize, cast", [("MixtralForCausalLM", True, False),
                                                           ("Qwen2MoeForCausalLM", False, True),
                                                           ("Qwen3MoeForCausalLM", True, True)])
def test_kernel_matches_the_hf_sparse_block(architecture, normalize, cast, dtype):
    """Same routing (softmax, top-k, normalisation, dtype of the weights) and the same sums as the HF block: within
    1e-6 in float32, one bfloat16 step of the largest output in bfloat16 (Qwen's match to the bit)."""
    model = build_causal_lm(architecture).to(dtype)
    block = model.model.layers[0].mlp
    torch.manual_seed(1)
    hidden = torch.randn(3, 7, model.config.hidden_size, dtype=dtype)
    with torch.no_grad():
        expected = block(hidden)
        got = _kernel_forward(block, hidden, model.config.num_experts_per_tok, normalize, cast)
    atol = 1e-6 if dtype == torch.float32 else expected.abs().max().item() * 2 ** -7
    torch.testing.assert_close(got, expected, rtol=0, atol=atol)
    if dtype == torch.bfloat16 and cast:
        assert torch.equal(got, expected)
    # the other normalisation gives other numbers: the flag is not decorative
    with torch.no_grad():
        other = _kernel_forward(block, hidden, model.config.num_experts_per_tok, not normalize, cast)
    assert (other - expected).abs().max() > 10 * atol


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def _compile(architecture: str, parallel: int, **overrides):
    reference = build_causal_lm(architecture, num_key_value_heads=4, **overrides)
    knobs = KNOBS | {"tensor_parallel_size": parallel, "expert_parallel_size": parallel}
    return reference, NPUModelForCausalLM.from_model(reference, npu_config=knobs)


@pytest.mark.parametrize("architecture", [pytest.param("MixtralForCausalLM", marks=pytest.mark.slow),
                                          "Qwen2MoeForCausalLM"])
def test_expert_parallel_2_matches_eager(architecture, tokenizer):
    reference, model = _compile(architecture, 2)
    try:
        for prompts in ([LONG_PROMPT], BATCH_PROMPTS):
            inputs = tokenizer(prompts, return_tensors="pt", padding=True)
            assert_same_generation(model.generate(**inputs, **GREEDY), reference.generate(**inputs, **GREEDY))
            stats = model.npu_stats
            if len(prompts) == 1:  # one token per decode step activates exactly top_k experts per layer
                assert stats.experts_activated_per_step("decode") == reference.config.num_experts_per_tok
            imbalance = stats.expert_load_imbalance("decode")  # 1 = balanced, 2 = every token on one device
            assert 1.0 <= imbalance <= 2.0
            assert f"load imbalance {imbalance:.2f}" in str(stats)
        ops = {node.op for cost in model._runtime.engine.costs.values() for node in cost.index.graph.nodes}
        assert {"npu.moe_dispatch.default", "npu.all_to_all.default", "npu.moe_experts.default"} <= ops
        assert "npu.moe.default" not in ops
        decode = model._runtime.engine.costs["decoder_batch_4"]   # dispatch and combine are costed on the link
        exchanges = [u for u in decode.units if u.name in ("moe_dispatch", "all_to_all")]
        layers = reference.config.num_hidden_layers - len(getattr(reference.config, "mlp_only_layers", None) or [])
        assert len(exchanges) == 2 * layers and all(u.link_s > 0 and u.sync_s > 0 for u in exchanges)
    finally:
        model.release()


@pytest.mark.slow
@pytest.mark.parametrize("architecture", MOE_ARCHITECTURES)
def test_expert_parallel_4_matches_eager(architecture, tokenizer):
    reference, model = _compile(architecture, 4)
    try:
        inputs = tokenizer(BATCH_PROMPTS, return_tensors="pt", padding=True)
        assert_same_generation(model.generate(**inputs, **GREEDY), reference.generate(**inputs, **GREEDY))
    finally:
        model.release()


@pytest.fixture(scope="module")
def mixtral_artifacts(tmp_path_factory):
    """A tiny Mixtral and its saved artifacts with experts replicated (1) and spread over 2 devices (2)."""
    reference = build_causal_lm("MixtralForCausalLM", num_key_value_heads=4)
    paths = {}
    for parallel in (1, 2):
        knobs = KNOBS | {"tensor_parallel_size": parallel, "expert_parallel_size": parallel}
        model = NPUModelForCausalLM.from_model(reference, npu_config=knobs)
        try:
            paths[parallel] = tmp_path_factory.mktemp(f"mixtral-ep{parallel}")
            model.save_pretrained(paths[parallel])
        finally:
            model.release()
    return reference, paths


def test_each_rank_holds_only_its_experts(mixtral_artifacts):
    reference, paths = mixtral_artifacts
    name = "model.layers.1.mlp.experts.gate_up_proj"
    full = reference.state_dict()[name]                                          # [8, 2I, H]
    for rank in range(2):
        with safe_open(str(paths[2] / f"model-tp{rank}-of-2.safetensors"), "pt") as shard:
            torch.testing.assert_close(shard.get_tensor(name), full[4 * rank:4 * rank + 4], rtol=0, atol=0)


RANK_SCRIPT = """
import json, sys, torch.distributed as dist
from optimum_npu import NPUModelForCausalLM
from optimum_npu.models.tiny import build_tokenizer
rank, artifact = int(sys.argv[1]), sys.argv[2]
dist.init_process_group("gloo", rank=rank, world_size=2)
model = NPUModelForCausalLM.from_pretrained(artifact, npu_config={"collectives": "torch.distributed"})
inputs = build_tokenizer()(json.loads(sys.argv[3]), return_tensors="pt", padding=True)
out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
print("TOKENS", json.dumps(out.tolist(), separators=(",", ":")))
dist.destroy_process_group()
"""


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["Qwen2MoeForCausalLM", "GptOssForCausalLM"])
def test_expert_parallel_on_torch_distributed_gives_the_eager_tokens(tmp_path, tokenizer, architecture):
    reference, model = _compile(architecture, 2)
    try:
        model.save_pretrained(tmp_path / "ep2")
    finally:
        model.release()
    inputs = tokenizer(BATCH_PROMPTS, return_tensors="pt", padding=True)
    expected = reference.generate(**inputs, max_new_tokens=12, do_sample=False).tolist()
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    procs = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(rank), str(tmp_path / "ep2"),
                               json.dumps(BATCH_PROMPTS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for rank in range(2)]
    for proc, (stdout, stderr) in zip(procs, [proc.communicate(timeout=240) for proc in procs]):
        assert proc.returncode == 0, stderr[-2000:]
        line = next(line for line in stdout.splitlines() if line.startswith("TOKENS"))
        assert json.loads(line.split(" ", 1)[1]) == expected


@pytest.mark.parametrize("architecture, knobs, message", [
    ("MixtralForCausalLM", {"tensor_parallel_size": 2, "expert_parallel_size": 4},
     r"expert_parallel_size=4 with tensor_parallel_size=2: .* choose expert_parallel_size in \[1, 2\]"),
    ("LlamaForCausalLM", {"tensor_parallel_size": 2, "expert_parallel_size": 2},
     r"expert_parallel_size=2 needs a mixture-of-experts model; LlamaForCausalLM has no experts"),
    ("MixtralForCausalLM", {"tensor_parallel_size": 2, "expert_parallel_size": 2, "num_local_experts": 3},
     r"expert_parallel_size=2 does not divide the model's 3 experts per layer; choose expert_parallel_size in "
     r"\[1, 3\]"),
    # experts split by intermediate size (tests/test_moe_tensor_parallel.py)
    ("MixtralForCausalLM", {"tensor_parallel_size": 2, "expert_parallel_size": 2, "expert_tensor_parallel": True},
     r"expert_tensor_parallel=True with expert_parallel_size=2: the experts are split either by expert"),
    ("LlamaForCausalLM", {"tensor_parallel_size": 2, "expert_tensor_parallel": True},
     r"expert_tensor_parallel=True needs a mixture-of-experts model; LlamaForCausalLM"),
    ("Qwen2MoeForCausalLM", {"tensor_parallel_size": 4, "expert_tensor_parallel": True, "moe_intermediate_size": 30},
     r"expert_tensor_parallel=True with tensor_parallel_size=4 does not divide the experts' 30 intermediate "
     r"features; choose tensor_parallel_size in \[1, 2, 3, 5, 6, 10, 15, 30\]"),
    ("MixtralForCausalLM", {"tensor_parallel_size": 2, "expert_tensor_parallel": "yes"},
     r"expert_tensor_parallel='yes' must be True or False"),
])
def test_expert_parallel_size_is_checked_before_compiling(architecture, knobs, message):
    knobs = dict(knobs)
    overrides = {key: knobs.pop(key) for key in ("num_local_experts", "moe_intermediate_size") if key in knobs}
    reference = build_causal_lm(architecture, num_key_value_heads=4, **overrides)
    with pytest.raises(NPUConfigError, match=message):
        NPUModelForCausalLM.from_model(reference, npu_config=KNOBS | knobs)


def test_unsupported_expert_activation_is_refused():
    model = build_causal_lm("MixtralForCausalLM", hidden_act="gelu")
    with pytest.raises(ValueError, match=r"MixtralForCausalLM with hidden_act='gelu' is not supported .*"
                                         r"hidden_act='silu'"):
        NPUModelForCausalLM.from_model(model, npu_config=KNOBS)


def test_decode_cost_grows_with_the_experts_a_batch_activates():
    assert expected_active_experts(1, 8, 2) == pytest.approx(2.0)
    assert expected_active_experts(16, 8, 2) == pytest.approx(8 * (1 - 0.75 ** 16))
    assert expected_active_experts(16, 8, 2, held=4) == pytest.approx(4 * (1 - 0.75 ** 16))
    reference = build_causal_lm("MixtralForCausalLM", size="demo")
    model = NPUModelForCausalLM.from_model(reference, npu_config={**KNOBS, "batch_size": 16,
                                                                  "decoder_batch_sizes": [1, 16]})
    try:
        costs = {name: model._runtime.engine.costs[name] for name in ("decoder_batch_1", "decoder_batch_16")}
    finally:
        model.release()
    moe_bytes = {name: sum(u.bytes for u in cost.units if u.name == "moe") for name, cost in costs.items()}
    hidden = reference.config.hidden_size
    expert_bytes = 3 * hidden * reference.config.intermediate_size * 4      # one expert's float32 weights
    layers = reference.config.num_hidden_layers
    assert moe_bytes["decoder_batch_1"] == pytest.approx(layers * 2 * expert_bytes, rel=0.01)       # k experts
    assert moe_bytes["decoder_batch_16"] == pytest.approx(layers * 8 * (1 - 0.75 ** 16) * expert_bytes, rel=0.01)


@pytest.mark.slow
def test_planner_spreads_the_experts_of_a_real_shape():
    """Mixtral-8x7B (no weights): replicated experts barely shrink with TP 2; spread with EP 2, each device holds
    half of them (the routed experts are 45.1B of the 46.7B parameters)."""
    from optimum_npu.planner import plan

    knobs = {"max_seq_len": 1024, "batch_size": 1, "decoder_batch_sizes": [1], "prefill_chunk_size": 256,
             "dtype": "bfloat16", "npu": "h100-sxm"}
    replicated = {r.tensor_parallel_size: r for r in plan("mixtral-8x7b", knobs, tensor_parallel_sizes=[1, 2],
                                                          prompt_lengths=[256])}
    spread = plan("mixtral-8x7b", knobs, tensor_parallel_sizes=[2], prompt_lengths=[256], expert_parallel=True)[0]
    experts = 32 * 8 * 3 * 4096 * 14336 * 2                                   # bytes of the routed experts
    weights = {tp: r.memory_per_device_bytes["weights"] for tp, r in replicated.items()}
    assert weights[1] - weights[2] < 0.05 * weights[1]                       # TP alone: experts replicated
    assert spread.expert_parallel_size == 2
    assert spread.memory_per_device_bytes["weights"] == pytest.approx(weights[2] - experts / 2, rel=0.01)
    assert not replicated[1].fits and spread.fits                             # 93 GB vs ~47 GB on an 80 GB H100


@pytest.mark.parametrize("op, position, value", [("npu.moe.default", 4, 99),            # top_k beyond the experts
                                                 ("npu.moe_experts.default", 5, 0),     # no experts: cost / 0
                                                 ("npu.moe_dispatch.default", 5, 3)])   # 3 ranks, 8 experts
def test_tampered_routing_arguments_are_refused_at_load(mixtral_artifacts, tmp_path, op, position, value):
    """An artifact is untrusted: routing facts that do not fit the weights fail the shape check at load, before
    the cost model divides by them or a kernel runs."""
    artifact = tmp_path / "artifact"
    shutil.copytree(mixtral_artifacts[1][1 if op == "npu.moe.default" else 2], artifact)

    def edit(doc):
        node = next(node for node in doc["nodes"] if node["op"] == op)
        node["args"][position] = value

    edit_graph(artifact, "decoder_batch_1", edit)
    with pytest.raises(GraphFormatError, match="cannot run on its own inputs"):
        NPUModelForCausalLM.from_pretrained(artifact)


def test_a_tp_style_on_the_routed_experts_is_refused():
    """Their 3-D stacked weights are replicated or spread by expert parallelism; a column/row style would cut
    them along the wrong dimension."""
    import dataclasses

    from optimum_npu.compile.tensor_parallel_plan import TensorParallelError
    from optimum_npu.models.adapters.moe import MIXTRAL
    from optimum_npu.models.adapters.tp_plan import decoder_tp_plan
    from optimum_npu.models.model_config import DecoderModelConfig

    adapter = dataclasses.replace(MIXTRAL, tp_plan={**MIXTRAL.tp_plan, "layers.*.mlp.experts": "colwise"})
    model = DecoderModelConfig.from_hf(build_causal_lm("MixtralForCausalLM").config)
    with pytest.raises(TensorParallelError, match=r"module model.layers.\*.mlp.experts has tensor-parallel style "
                                                  r"'colwise'; the routed experts are replicated"):
        decoder_tp_plan(adapter, model, 2)
