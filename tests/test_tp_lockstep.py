"""Lockstep tensor parallelism: the in-process ranks' graphs run as one interpretation over stacked tensors and
give what the ranks give one by one (tokens, logits, each rank's KV cache) with the same simulated figures."""

from __future__ import annotations

import pytest
import torch

from optimum_npu import NPUModelForCausalLM
from optimum_npu.device.host_fusion import rms_normalized, rotate_half_embedded
from optimum_npu.device.kernels import packed_linear
from optimum_npu.device.lockstep import LockstepProgram
from optimum_npu.device.lockstep_group import LOCKSTEP_ENV, lockstep_default
from optimum_npu.device.lockstep_kernels import PackedShards, merged_column_linear, reduced_row_linear
from optimum_npu.device.lockstep_steps import LockstepUnsupported
from optimum_npu.models.tiny import build_causal_lm, build_tokenizer
from optimum_npu.schema import Graph, Node, TensorSpec

SHAPE = dict(num_attention_heads=8, num_key_value_heads=4, head_dim=8)
KNOBS = {"max_seq_len": 96, "batch_size": 2, "decoder_batch_sizes": [1, 2], "prefill_chunk_size": 16,
         "kvcache_block_size": 16}
PROMPTS = ["Lockstep ranks run one interpretation over stacked shards", "short"]


@pytest.fixture(scope="module")
def hf_model():
    return build_causal_lm("LlamaForCausalLM", **SHAPE)


@pytest.fixture(scope="module")
def models(hf_model):
    """TP 1, 2 and 4, with every linear weight packed (``kernels/packed_linear``; the tiny matrices are below
    its size bar, which is lowered): lockstep reads packed shards, the per-rank path the plain stack."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(packed_linear, "PACK_MIN_BYTES", 0)
        built = {tp: NPUModelForCausalLM.from_model(hf_model, npu_config=KNOBS | {"tensor_parallel_size": tp,
                                                                               "device": 0 if tp == 1 else tp})
                 for tp in (1, 2, 4)}
    yield built
    for model in built.values():
        model.release()


@pytest.fixture(scope="module")
def inputs():
    return build_tokenizer()(PROMPTS, return_tensors="pt", padding=True)


def generate(model, inputs, lockstep: bool | None = None):
    if lockstep is not None:
        model._runtime.engine.lockstep = lockstep
    out = model.generate(**inputs, max_new_tokens=8, do_sample=False, output_logits=True,
                         return_dict_in_generate=True)
    return out, model.npu_stats


@pytest.fixture(scope="module")
def references(models, hf_model, inputs):
    """The tokens of TP=1 and of eager Transformers."""
    return generate(models[1], inputs)[0].sequences, hf_model.generate(**inputs, max_new_tokens=8, do_sample=False)


@pytest.mark.parametrize("tp", [2, 4])
def test_lockstep_matches_the_per_rank_path_tp1_and_eager(models, references, inputs, tp):
    engine = models[tp]._runtime.engine
    assert engine.lockstep and engine.lockstep_group.refused == {}
    assert set(engine.lockstep_group.programs) == set(engine.graphs)
    assert any(type(value) is PackedShards for value in engine.lockstep_group.bindings["prefill"])
    functions = {step.fn for step in engine.lockstep_group.programs["prefill"].steps}
    assert {merged_column_linear, reduced_row_linear} <= functions     # q/k/v and gate/up merged; o and down reduced
    assert {rms_normalized, rotate_half_embedded} <= functions          # fused host steps (``host_fusion``)
    per_rank, per_rank_stats = generate(models[tp], inputs, lockstep=False)
    lockstep, lockstep_stats = generate(models[tp], inputs, lockstep=True)
    assert torch.equal(lockstep.sequences, per_rank.sequences)
    assert torch.equal(lockstep.sequences, references[0])
    assert torch.equal(lockstep.sequences, references[1])
    for got, want in zip(lockstep.logits, per_rank.logits):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert lockstep_stats == per_rank_stats                    # simulated figures: the same, bit for bit
    assert lockstep_stats.steps and lockstep_stats.tensor_parallel_size == tp


def test_each_rank_computes_its_own_cache_and_output(models):
    """One prefill call through each path from zeroed caches: every rank's cache and the output agree."""
    engine = models[4]._runtime.engine
    inputs = {"input_ids": torch.arange(3, 19).view(1, 16), "positions": torch.arange(16).view(1, 16),
              "block_table": torch.tensor([[2, 0, 0, 0, 0, 0]], dtype=torch.int32), "slots": torch.tensor([0]),
              "logits_index": torch.tensor([15])}
    results = {}
    for lockstep in (False, True):
        for rank in engine.ranks:
            for tensor in rank.state.values():
                tensor.zero_()
        engine.lockstep = lockstep
        output = engine.execute("prefill", inputs)
        results[lockstep] = output, [{n: t.clone() for n, t in rank.state.items()} for rank in engine.ranks]
    (got, got_caches), (want, want_caches) = results[True], results[False]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    for got_rank, want_rank in zip(got_caches, want_caches):
        for name in want_rank:
            assert want_rank[name][2].abs().sum() > 0            # block 2 written, by both paths
            torch.testing.assert_close(got_rank[name], want_rank[name], atol=1e-6, rtol=0)
    assert not torch.equal(got_caches[0]["key_cache_0"], got_caches[1]["key_cache_0"])   # each its own heads


def test_ranks_keep_their_own_memory_reservations(models):
    engine = models[4]._runtime.engine
    held = engine.reservations()
    assert len(held) == 4 and all(h == held[0] for h in held) and held[0]["kv_cache"] > 0
    spec = engine.graphs["prefill"].inputs_of_kind("kv_cache")[0]
    for rank in engine.ranks:
        assert tuple(rank.state[spec.name].shape) == spec.shape   # each rank sees exactly its own cache


def _graph_with(op: str, args: list) -> Graph:
    meta = {"shape": [2, 4], "dtype": "float32"}
    return Graph("probe", (TensorSpec("x", "input", (2, 4), "float32"), TensorSpec("w", "weight", (2, 4), "float32")),
                 (Node("y", op, args, {}, meta),), ("y",))


def test_an_op_without_a_rule_is_refused_and_a_covered_one_is_not():
    with pytest.raises(LockstepUnsupported, match=r"node 'y' \(aten.argmax.default\)"):
        LockstepProgram(_graph_with("aten.argmax.default", [{"ref": "w"}]), {"w"}, set(), 2)
    program = LockstepProgram(_graph_with("aten.mul.Tensor", [{"ref": "x"}, {"ref": "w"}]), {"w"}, set(), 2)
    x, w = torch.randn(2, 4), torch.randn(2, 2, 4)
    assert torch.equal(program([x, w])[0], x * w[0])


def test_lockstep_can_be_switched_off_by_environment(models, inputs, tmp_path, monkeypatch):
    models[2].save_pretrained(tmp_path / "tp2")
    monkeypatch.setenv(LOCKSTEP_ENV, "0")
    assert not lockstep_default()
    model = NPUModelForCausalLM.from_pretrained(tmp_path / "tp2", npu_config={"device": 6})
    try:
        assert model._runtime.engine.lockstep is False
        calls = []
        monkeypatch.setattr(model._runtime.engine.lockstep_group, "run", lambda *a: calls.append(a))
        out, _ = generate(model, inputs)
        assert calls == [] and torch.equal(out.sequences, generate(models[2], inputs, lockstep=True)[0].sequences)
    finally:
        model.release()
    monkeypatch.setenv(LOCKSTEP_ENV, "1")
    assert lockstep_default()
