"""RMS norms and rotary embeddings run as one host step each (``device/host_fusion.py``): every such chain of a
decoder graph is found, the fused program's values are bit-identical to the node-by-node program's, a chain
whose intermediate is read elsewhere (or that is not float32) runs node by node, and generate() gives the same
tokens, logits and simulated figures with the switch on and off."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from optimum_npu import NPUModelForCausalLM
from optimum_npu.device import engine as engine_module
from optimum_npu.device.executor import Program, value_dtypes
from optimum_npu.device.host_fusion import HOST_FUSION_ENV, host_fusion_enabled, host_fusion_rewrites
from optimum_npu.schema import Node

PROMPTS = ["fused norms keep the numbers", "a"]


@pytest.fixture(scope="module")
def calls(llama, tokenizer):
    """The first prefill and decode calls of a generate(): (graph name, inputs), and the model's layer count."""
    engine = llama.model._runtime.engine
    seen: dict[str, tuple[str, dict]] = {}
    execute = engine.execute

    def recording(name, inputs):
        kind = "prefill" if name.startswith("prefill") else "decode"
        seen.setdefault(kind, (name, {key: value.clone() for key, value in inputs.items()}))
        return execute(name, inputs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "execute", recording)
        llama.model.generate(**tokenizer(PROMPTS, return_tensors="pt", padding=True), max_new_tokens=2,
                             do_sample=False)
    return seen, llama.ref.config.num_hidden_layers


def _rewrites(graph, dtypes=None):
    return host_fusion_rewrites(graph, dtypes or value_dtypes(graph))


def _ops(rewrites) -> list[str]:
    return [step.op for steps in rewrites.values() for step in steps]


@pytest.mark.parametrize("kind", ["prefill", "decode"])
def test_every_norm_and_rotary_chain_fuses_with_bit_identical_values(llama, calls, kind):
    seen, layers = calls
    name, inputs = seen[kind]
    rank = llama.model._runtime.engine.ranks[0]
    graph = rank.programs[name].graph
    rewrites = _rewrites(graph)
    assert _ops(rewrites).count("host.rms_norm") == 2 * layers + 1            # two per layer and the final norm
    assert _ops(rewrites).count("host.rotary") == 2 * layers                  # queries and keys
    arguments = rank.arguments(name, inputs)
    plain, fused = Program(graph), Program(graph, rewrites=rewrites)
    assert len(fused.nodes.steps) < len(plain.nodes.steps) - 8 * layers
    want = plain.nodes.run(arguments)                    # the cache writes of both runs are the same values
    got = fused.nodes.run(arguments)
    for value, slot in plain.nodes.slot_of.items():
        if value in fused.nodes.slot_of and slot >= plain.nodes.num_inputs and isinstance(want[slot], torch.Tensor):
            assert torch.equal(got[fused.nodes.slot_of[value]], want[slot]), value


def test_a_chain_read_elsewhere_or_not_float32_runs_node_by_node(llama, calls):
    seen, layers = calls
    graph = llama.model._runtime.engine.graphs[seen["decode"][0]]
    mean = next(node for node in graph.nodes if node.op == "aten.mean.dim")
    neg = next(node for node in graph.nodes if node.op == "aten.neg.default")
    readers = (Node("peek_mean", "aten.mul.Tensor", [{"ref": mean.name}, 2.0], {}, dict(mean.meta)),
               Node("peek_neg", "aten.mul.Tensor", [{"ref": neg.name}, 2.0], {}, dict(neg.meta)))
    peeked = dataclasses.replace(graph, nodes=graph.nodes + readers, outputs=graph.outputs + ("peek_mean", "peek_neg"))
    ops = _ops(_rewrites(peeked))
    assert ops.count("host.rms_norm") == 2 * layers and ops.count("host.rotary") == 2 * layers - 1
    bf16 = {name: "bfloat16" if dtype == "float32" else dtype for name, dtype in value_dtypes(graph).items()}
    assert _rewrites(graph, bf16) == {}


def test_generate_is_the_same_with_the_fusion_off(llama, tokenizer, monkeypatch):
    monkeypatch.setenv(HOST_FUSION_ENV, "0")
    assert not host_fusion_enabled()
    plain = NPUModelForCausalLM.from_pretrained(llama.artifact)
    monkeypatch.setenv(HOST_FUSION_ENV, "1")
    fused = NPUModelForCausalLM.from_pretrained(llama.artifact)   # fresh, like ``plain`` (no cached prefixes)
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    try:
        steps = [s.op for s in plain._runtime.engine.ranks[0].programs["prefill"].nodes.step_nodes]
        assert "host.rms_norm" not in steps
        results = [(out.sequences, torch.stack(out.logits), model.npu_stats) for model in (fused, plain)
                   for out in [model.generate(**inputs, max_new_tokens=5, do_sample=False, output_logits=True,
                                              return_dict_in_generate=True)]]
    finally:
        plain.release()
        fused.release()
    (tokens, logits, stats), (plain_tokens, plain_logits, plain_stats) = results
    assert torch.equal(tokens, plain_tokens) and torch.equal(logits, plain_logits)   # bit for bit
    assert stats == plain_stats
    assert engine_module.host_fusion_enabled()
