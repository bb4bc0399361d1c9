"""Capacity planner: shallow-capture extrapolation, agreement with the simulated runtime, invalid and
non-fitting configurations, config loading, and the ``optimum-npu plan`` command (JSON, table, RSS)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from optimum_npu import NPUModelForCausalLM
from optimum_npu.cli import main
from optimum_npu.device.spec import resolve_spec
from optimum_npu.models.decoder.estimate import decode_step_seconds, meta_cost_models, prefill_seconds
from optimum_npu.models.decoder.npu_config import NPUConfigError, NPUDecoderConfig
from optimum_npu.models.model_config import DecoderModelConfig
from optimum_npu.models.registry import lookup_architecture
from optimum_npu.models.tiny import build_causal_lm
from optimum_npu.planner import load_hf_config, plan
from optimum_npu.planner.extrapolate import extrapolated_costs, truncations

S, F = "sliding_attention", "full_attention"
GEMMA_TYPES = [S, S, F, F, S]  # every transition: S->S, S->F, F->F, F->S


def _close(got: float, want: float, rel: float) -> None:
    assert got == pytest.approx(want, rel=rel, abs=0), (got, want)


def test_truncations_capture_one_layer_per_type_plus_one():
    assert truncations((F,) * 6) == {(F,): -4.0, (F, F): 5.0}
    assert truncations(tuple(GEMMA_TYPES)) == {(S, F): -2.0, (S, F, S): 2.0, (S, F, F): 1.0}
    assert truncations((F, F)) == {(F, F): 1.0}


@pytest.mark.parametrize("architecture,overrides", [
    ("LlamaForCausalLM", dict(num_hidden_layers=6)),
    ("Gemma3ForCausalLM", dict(num_hidden_layers=5, layer_types=GEMMA_TYPES)),
])
@pytest.mark.slow
def test_extrapolated_costs_equal_full_capture(architecture, overrides):
    hf_config = build_causal_lm(architecture, **overrides).config
    knobs = {"max_seq_len": 64, "batch_size": 2, "prefill_chunk_size": 16, "kvcache_block_size": 16,
             "kvcache_num_blocks": 8, "attn_impl": "flash_attn", "kvcache_partition_len": 16}
    names = ["prefill", "decoder_batch_2"]
    config = NPUDecoderConfig(**knobs).resolve(DecoderModelConfig.from_hf(hf_config))
    shallow = extrapolated_costs(hf_config, lookup_architecture(hf_config, "decoder"), config, names, [1, 2],
                                 resolve_spec("atom"))
    _, full = meta_cost_models(hf_config, knobs | {"tensor_parallel_size": 2}, names)  # full depth, sharded
    _close(decode_step_seconds(shallow[1]["decoder_batch_2"], 2, 40),
           decode_step_seconds(meta_cost_models(hf_config, knobs, ["decoder_batch_2"])[1]["decoder_batch_2"], 2, 40),
           1e-6)
    for context in (5, 40, 64):
        _close(decode_step_seconds(shallow[2]["decoder_batch_2"], 2, context),
               decode_step_seconds(full["decoder_batch_2"], 2, context), 1e-6)
    for prompt in (9, 50):
        _close(prefill_seconds(shallow[2]["prefill"], 16, prompt), prefill_seconds(full["prefill"], 16, prompt), 1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("tp", [1, 2])
def test_planner_matches_the_simulated_runtime(tp):
    """Compile for real with the same knobs, generate, and compare with ``npu_stats`` (host-link time included
    on both sides). Decode contexts 21..28 all cost one 32-key flash partition pair, so every step costs the same."""
    hf_model = build_causal_lm("LlamaForCausalLM", num_hidden_layers=4)
    knobs = {"max_seq_len": 64, "batch_size": 2, "prefill_chunk_size": 16, "kvcache_block_size": 16,
             "kvcache_partition_len": 16, "attn_impl": "flash_attn"}
    [planned] = plan(hf_model.config, knobs, tensor_parallel_sizes=[tp], prompt_lengths=[20], decode_context_len=32)
    model = NPUModelForCausalLM.from_model(hf_model, npu_config=knobs | {"tensor_parallel_size": tp})
    try:
        prompt = torch.randint(3, 200, (1, 20), generator=torch.Generator().manual_seed(0))
        for batch in (1, 2):
            model.generate(prompt.repeat(batch, 1), max_new_tokens=8, min_new_tokens=8, do_sample=False)
            stats = model.npu_stats
            assert stats.buckets[f"decoder_batch_{batch}"] == 7
            _close(planned.ttft_ms[20] * batch, stats.ttft_s * 1e3, 1e-9)
            _close(planned.decode_ms_per_token[batch], stats.decode_s_per_token * 1e3, 1e-9)
            _close(planned.tokens_per_s[batch], stats.tokens_per_s, 1e-9)
        assert planned.memory_per_device_bytes["kv_cache"] == stats.memory["kv_cache"]
    finally:
        model.release()


def test_invalid_sizes_are_reported_not_raised():
    hf_config = build_causal_lm("LlamaForCausalLM").config  # 4 heads, 2 key/value heads
    results = plan(hf_config, {"max_seq_len": 64}, tensor_parallel_sizes=[16, 3, 2, 1], prompt_lengths=[16, 100])
    by_tp = {r.tensor_parallel_size: r for r in results}
    assert [r.tensor_parallel_size for r in results] == [1, 2, 3, 16]
    assert not by_tp[3].valid and "tensor_parallel_size=3 does not divide" in by_tp[3].error
    assert not by_tp[16].valid and "devices 0..7" in by_tp[16].error
    assert by_tp[3].ttft_ms == {} and by_tp[3].memory_per_device_bytes is None
    for tp in (1, 2):
        assert by_tp[tp].valid and by_tp[tp].fits and by_tp[tp].ttft_ms[100] is None  # longer than max_seq_len
        memory = by_tp[tp].memory_per_device_bytes
        assert memory["total"] == sum(v for k, v in memory.items() if k != "total")
    assert "collective_buffers" in by_tp[2].memory_per_device_bytes
    assert "collective_buffers" not in by_tp[1].memory_per_device_bytes
    assert by_tp[2].memory_per_device_bytes["kv_cache"] * 2 == by_tp[1].memory_per_device_bytes["kv_cache"]


def test_knob_errors_name_the_knob():
    hf_config = build_causal_lm("LlamaForCausalLM").config
    with pytest.raises(NPUConfigError, match="tensor_parallel_sizes=\\[...\\]"):
        plan(hf_config, {"tensor_parallel_size": 2})
    with pytest.raises(NPUConfigError, match="max_seq_len=4096 exceeds"):
        plan(hf_config, {"max_seq_len": 4096})
    with pytest.raises(ValueError, match="tensor_parallel_sizes=\\[0\\]"):
        plan(hf_config, tensor_parallel_sizes=[0])
    with pytest.raises(NPUConfigError, match="decode_context_len=65"):
        plan(hf_config, {"max_seq_len": 64}, decode_context_len=65)


def test_load_config_from_file_directory_and_builtin(tmp_path):
    build_causal_lm("Qwen3ForCausalLM").config.save_pretrained(tmp_path)
    assert load_hf_config(tmp_path).architectures == ["Qwen3ForCausalLM"]
    assert load_hf_config(tmp_path / "config.json").hidden_size == 64
    assert DecoderModelConfig.from_hf(load_hf_config("llama-3-70b")).num_layers == 80
    with pytest.raises(ValueError, match="built-in shapes: .*llama-3-8b"):
        load_hf_config("llama-4-9000b")
    with pytest.raises(ValueError, match="has no config.json"):
        load_hf_config(tmp_path.parent)


@pytest.mark.slow
def test_cli_table_and_json(tmp_path, capsys):
    build_causal_lm("LlamaForCausalLM").config.save_pretrained(tmp_path)
    argv = ["plan", str(tmp_path / "config.json"), "--tensor-parallel-size", "1,2,3", "--max-seq-len", "64",
            "--batch-size", "4", "--prompt-lengths", "16,32"]
    assert main(argv + ["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["tensor_parallel_size"] for d in data] == [1, 2, 3]
    assert set(data[0]["memory_per_device_bytes"]) >= {"weights", "kv_cache", "workspace", "total"}
    assert set(data[0]["ttft_ms"]) == {"16", "32"} and set(data[1]["decode_ms_per_token"]) == {"1", "2", "4"}
    assert data[0]["fits"] is True and data[2]["valid"] is False and data[2]["fits"] is False
    assert main(argv) == 0
    table = capsys.readouterr().out
    header = next(line for line in table.splitlines() if "TP=1" in line)
    assert header.split() == ["TP=1", "TP=2", "TP=3"]
    assert "decode batch 4 (ms/token)" in table and "TP=3: invalid: tensor_parallel_size=3" in table


@pytest.mark.slow
def test_cli_plans_llama_3_8b_in_a_small_process():
    """The 8B plan in a fresh process: TP=1 does not fit on ATOM (weights alone exceed 16 GB) but still gets
    its speed and a suggestion; peak RSS of the whole process stays under 2 GB."""
    script = ("import resource, subprocess, sys; "
              "out = subprocess.run([sys.executable, '-m', 'optimum_npu.cli', 'plan', 'llama-3-8b', "
              "'--tensor-parallel-size', '1,2', '--json'], check=True, capture_output=True, text=True).stdout; "
              "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); print(out)")
    rss_kb, output = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                                    text=True).stdout.split("\n", 1)
    assert int(rss_kb) * 1024 < 2 * 10**9
    tp1, tp2 = json.loads(output)
    assert tp1["fits"] is False and tp1["suggestion"] == "tensor_parallel_size=2 fits"
    assert tp1["memory_per_device_bytes"]["weights"] > 16 * 10**9
    assert tp2["fits"] is True
    ratio = tp1["decode_ms_per_token"]["1"] / tp2["decode_ms_per_token"]["1"]
    assert 1.5 < ratio < 2.0  # half the weights per device to stream, plus two all-reduces per layer
