"""Tensor parallelism: every architecture split over 2 and 4 simulated devices gives the one-device tokens."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from optimum_npu import NPUModelForCausalLM
from optimum_npu.compile.tensor_parallel import shard_graph
from optimum_npu.compile.tensor_parallel_plan import TensorParallelError, TensorParallelPlan
from optimum_npu.models.adapters.phi3 import PHI3
from optimum_npu.models.adapters.tp_plan import decoder_tp_plan
from optimum_npu.models.model_config import DecoderModelConfig
from optimum_npu.device.device import get_device
from optimum_npu.device.spec import PRESETS
from optimum_npu.models.tiny import build_causal_lm, build_tokenizer

ARCHITECTURES = ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
                 "Gemma3ForCausalLM", "Phi3ForCausalLM", "GPT2LMHeadModel"]  # the last two: fused projections
SHAPE = dict(num_attention_heads=8, num_key_value_heads=4, head_dim=8)  # divisible by 2 and 4 (GPT-2: 8 heads)
KNOBS = {"max_seq_len": 96, "batch_size": 2, "prefill_chunk_size": 16, "kvcache_block_size": 16}
PROMPTS = ["Tensor parallel prompt that is longer than one chunk", "short"]


@pytest.fixture(scope="module")
def inputs():
    return build_tokenizer()(PROMPTS, return_tensors="pt", padding=True)


def run(model, inputs):
    return model.generate(**inputs, max_new_tokens=16, do_sample=False, output_logits=True,
                          return_dict_in_generate=True)


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_tp2_and_tp4_match_tp1(architecture, inputs):
    hf_model = build_causal_lm(architecture, tie_word_embeddings=architecture == "Qwen3ForCausalLM", **SHAPE)
    results = {}
    for tp in (1, 2, 4):
        model = NPUModelForCausalLM.from_model(hf_model, npu_config=KNOBS | {"tensor_parallel_size": tp,
                                                                           "device": 0 if tp < 4 else 4})
        results[tp] = run(model, inputs)
        if tp > 1:
            assert model.npu_stats.tensor_parallel_size == tp
            assert model.npu_stats.device.startswith(", ".join(f"npu:{i}" for i in model.npu_config.device_ids))
        model.release()
    for tp in (2, 4):
        assert torch.equal(results[tp].sequences, results[1].sequences)
        for got, want in zip(results[tp].logits, results[1].logits):
            torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_each_device_holds_only_its_shard(tmp_path, inputs):
    hf_model = build_causal_lm("LlamaForCausalLM", **SHAPE)
    single = NPUModelForCausalLM.from_model(hf_model, npu_config=KNOBS | {"device": 6})
    split = NPUModelForCausalLM.from_model(hf_model, npu_config=KNOBS | {"tensor_parallel_size": 2, "device": [2, 5]})
    split.save_pretrained(tmp_path / "tp2")
    files = sorted(p.name for p in (tmp_path / "tp2").glob("*.safetensors"))
    assert files == ["model-tp0-of-2.safetensors", "model-tp1-of-2.safetensors"]
    with safe_open(str(tmp_path / "tp2" / files[1]), "pt") as shard:
        q_proj = shard.get_tensor("model.layers.0.self_attn.q_proj.weight")
        down = shard.get_tensor("model.layers.0.mlp.down_proj.weight")
    full = hf_model.state_dict()
    torch.testing.assert_close(q_proj, full["model.layers.0.self_attn.q_proj.weight"][32:], rtol=0, atol=0)
    torch.testing.assert_close(down, full["model.layers.0.mlp.down_proj.weight"][:, 64:], rtol=0, atol=0)

    one, two = single.npu_stats.memory, split.npu_stats.memory
    assert two["kv_cache"] * 2 == one["kv_cache"]
    assert two["weights"] < 0.75 * one["weights"]  # layers and vocabulary split, embedding replicated
    assert two["collective_buffers"] > 0
    atom = PRESETS["atom"]
    assert get_device(atom, 2).memory.by_category()["weights"] == two["weights"]
    assert get_device(atom, 5).memory.by_category()["weights"] == two["weights"]
    split.release()
    single.release()
    assert get_device(atom, 5).memory.used == 0


def test_graph_pass_inserts_collectives():
    hf_model = build_causal_lm("LlamaForCausalLM", **SHAPE)
    model = NPUModelForCausalLM.from_model(hf_model, npu_config=KNOBS | {"tensor_parallel_size": 2})
    graph = model._runtime.engine.graphs["prefill"]
    ops = [node.op for node in graph.nodes]
    assert ops.count("npu.all_reduce.default") == 2 * 2  # after o_proj and down_proj of each layer
    assert ops.count("npu.all_gather.default") == 1  # the vocabulary-split logits
    kv = graph.inputs_of_kind("kv_cache")[0]
    assert kv.shape[1] == 2  # 4 key/value heads over 2 devices
    model.release()
    with pytest.raises(TensorParallelError, match="tensor_parallel_size=3 does not divide"):
        shard_graph(graph, TensorParallelPlan.from_hf(3, {"layers.*.self_attn.q_proj": "colwise"}))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


RANK_SCRIPT = """
import json, sys, torch, torch.distributed as dist
from optimum_npu import NPUModelForCausalLM
from optimum_npu.models.tiny import build_tokenizer
rank, artifact = int(sys.argv[1]), sys.argv[2]
dist.init_process_group("gloo", rank=rank, world_size=2)
model = NPUModelForCausalLM.from_pretrained(artifact, npu_config={"collectives": "torch.distributed"})
inputs = build_tokenizer()(json.loads(sys.argv[3]), return_tensors="pt", padding=True)
out = model.generate(**inputs, max_new_tokens=16, do_sample=False)
print("TOKENS", json.dumps(out.tolist(), separators=(",", ":")), model.npu_stats.device)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_torch_distributed_backend_gives_the_in_process_tokens(tmp_path, inputs):
    hf_model = build_causal_lm("Qwen3ForCausalLM", **SHAPE)
    model = NPUModelForCausalLM.from_model(hf_model, npu_config=KNOBS | {"tensor_parallel_size": 2})
    expected = run(model, inputs).sequences.tolist()
    model.save_pretrained(tmp_path / "tp2")
    model.release()
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    procs = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(rank), str(tmp_path / "tp2"),
                               json.dumps(PROMPTS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for rank in range(2)]
    outputs = [proc.communicate(timeout=240) for proc in procs]
    for rank, (proc, (stdout, stderr)) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, stderr[-2000:]
        line = next(line for line in stdout.splitlines() if line.startswith("TOKENS"))
        _, tokens, device = line.split(" ", 2)
        assert json.loads(tokens) == expected
        assert device.startswith(f"npu:{rank}")  # each process hosts its own rank's device


def _rank_tensors(model, tmp_path, rank: int, names: list[str]) -> dict[str, torch.Tensor]:
    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / f"model-tp{rank}-of-{model.npu_config.tensor_parallel_size}.safetensors"),
                   "pt") as shard:
        return {name: shard.get_tensor(name) for name in names}


def test_fused_projections_are_split_per_part(tmp_path):
    """Phi-3's qkv_proj rows are [q (64) | k (32) | v (32)] and gate_up_proj's [gate | up]: rank 1 of 2 keeps
    the second half of each part (a contiguous split would hand it the end of q and all of k and v)."""
    hf_model = build_causal_lm("Phi3ForCausalLM", **SHAPE)
    model = NPUModelForCausalLM.from_model(hf_model, npu_config=KNOBS | {"tensor_parallel_size": 2})
    try:
        names = ["model.layers.1.self_attn.qkv_proj.weight", "model.layers.1.mlp.gate_up_proj.weight"]
        got = _rank_tensors(model, tmp_path, 1, names)
    finally:
        model.release()
    qkv, gate_up = (hf_model.state_dict()[name] for name in names)
    q, k, v = qkv.split([64, 32, 32])
    torch.testing.assert_close(got[names[0]], torch.cat([q[32:], k[16:], v[16:]]), rtol=0, atol=0)
    gate, up = gate_up.chunk(2)
    torch.testing.assert_close(got[names[1]], torch.cat([gate[64:], up[64:]]), rtol=0, atol=0)


def test_conv1d_fused_attention_is_split_per_part_along_its_output_columns(tmp_path):
    """GPT-2's c_attn weight is [in, 3 * hidden] (Conv1D): the parts are columns; c_proj is split by its rows."""
    hf_model = build_causal_lm("GPT2LMHeadModel", **SHAPE)
    model = NPUModelForCausalLM.from_model(hf_model, npu_config=KNOBS | {"tensor_parallel_size": 2})
    try:
        names = ["transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_attn.bias",
                 "transformer.h.0.attn.c_proj.weight"]
        got = _rank_tensors(model, tmp_path, 1, names)
    finally:
        model.release()
    weight, bias, proj = (hf_model.state_dict()[name] for name in names)
    torch.testing.assert_close(got[names[0]], torch.cat([p[:, 32:] for p in weight.split(64, dim=1)], dim=1),
                               rtol=0, atol=0)
    torch.testing.assert_close(got[names[1]], torch.cat([p[32:] for p in bias.split(64)]), rtol=0, atol=0)
    torch.testing.assert_close(got[names[2]], proj[32:], rtol=0, atol=0)


def test_unknown_styles_are_refused_naming_the_module():
    with pytest.raises(TensorParallelError, match=r"module model\.layers\.\*\.self_attn\.qkv_proj has tensor-parallel "
                                                  r"style 'colwise_gather_output'.*known styles: colwise, rowwise"):
        TensorParallelPlan.from_hf(2, {"layers.*.self_attn.qkv_proj": "colwise_gather_output"})
    adapter = dataclasses.replace(PHI3, tp_plan={"layers.*.mlp.gate_up_proj": "packed_colwise"})
    model = DecoderModelConfig.from_hf(build_causal_lm("Phi3ForCausalLM").config)
    with pytest.raises(TensorParallelError, match=r"module model\.layers\.\*\.mlp\.gate_up_proj has tensor-parallel "
                                                  r"style 'packed_colwise'; known styles: .*colwise_gate_up"):
        decoder_tp_plan(adapter, model, 2)


def test_logits_projection_is_found_by_name_not_position():
    hf_model = build_causal_lm("LlamaForCausalLM", **SHAPE)
    model = NPUModelForCausalLM.from_model(hf_model, npu_config=KNOBS)
    graph = model._runtime.engine.ranks[0].programs["prefill"].graph
    model.release()
    plan = TensorParallelPlan.from_hf(2, {"layers.*.self_attn.q_proj": "colwise"}, logits=("model.norm.weight",))
    with pytest.raises(TensorParallelError, match="0 linear layers reading the logits weight model.norm.weight"):
        shard_graph(graph, plan)
    # named as the down projection of the last layer (the last linear before the head): that one is split
    plan = TensorParallelPlan.from_hf(2, {}, logits=("model.layers.1.mlp.down_proj.weight",))
    sharded = shard_graph(graph, plan)
    gather = next(node for node in sharded.nodes if node.op == "npu.all_gather.default")
    linear = next(node for node in sharded.nodes if node.name == gather.args[0]["ref"])
    weight = next(spec for spec in sharded.inputs if spec.name == linear.args[1]["ref"])
    assert weight.source == "model.layers.1.mlp.down_proj.weight" and weight.shape == (32, 128)
