"""The seq2seq capacity plan: the weightless estimate against the simulated figures of a compiled tiny model, and
``optimum-npu plan`` on an encoder-decoder folder and a built-in shape."""

from __future__ import annotations

import json
import re

import pytest
from transformers import AutoTokenizer

from optimum_npu.cli import main
from optimum_npu.models.seq2seq.estimate import estimate_seq2seq
from optimum_npu.models.seq2seq.tiny_whisper import save_whisper

from seq2seq_fixtures import NPU_CONFIG


def test_weightless_estimate_equals_simulated_generate(seq2seq_models):
    """The planner's meta-capture costs are what the device engine charged for a greedy generate() of one input."""
    npu, eager, root = seq2seq_models["T5ForConditionalGeneration"]
    config, (estimate,) = estimate_seq2seq(eager.config, NPU_CONFIG, (npu.npu_config.npu,))
    assert config == npu.npu_config
    batch = AutoTokenizer.from_pretrained(root)(["hello world"], return_tensors="pt")
    npu.generate(**batch, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    stats = npu.npu_stats
    assert stats.decoder.decode_steps >= 5
    assert estimate.decode_s[1] == pytest.approx(stats.decode_s_per_token, rel=1e-9)
    assert estimate.prefill_s == pytest.approx(stats.cross_kv_s, rel=1e-9)
    (call,) = stats.encoder.calls
    assert estimate.encoder_s[call.bucket.name] == pytest.approx(call.seconds, rel=1e-9)
    assert estimate.memory["self_attn_kv"] == stats.kv_pools["paged"]
    assert estimate.memory["cross_kv"] == stats.kv_pools["cross"]
    assert estimate.memory["weights"] == stats.memory["weights"]


def _numbers(line: str) -> list[float]:
    return [float(x) for x in re.findall(r"\d+\.\d+(?:e-\d+)?", line)]


def test_cli_plans_a_whisper_folder(tmp_path, capsys):
    """A folder with an encoder-decoder config.json gets the seq2seq table; the 30-s column adds up its parts."""
    folder = save_whisper(tmp_path / "whisper")
    assert main(["plan", str(folder), "--npu", "atom,h100-sxm", "--max-seq-len", "48"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "WhisperForConditionalGeneration" in lines[0] and "max_seq_len 48" in lines[0]
    atom, h100 = (next(line for line in lines if line.startswith(name)) for name in ("atom", "h100-sxm"))
    *_, encoder, prefill, decode, window, rtf = _numbers(atom)
    assert "44 tokens after the forced prompt" in lines[-1]   # 48 positions - 4 prompt tokens (< 224 by default)
    assert window == pytest.approx((encoder + prefill + 43 * decode) / 1e3, rel=1e-3)
    assert rtf == pytest.approx(window / 30, rel=1e-3)
    assert _numbers(h100)[-2] < window   # the faster target transcribes faster


def test_cli_refuses_options_a_seq2seq_plan_does_not_take(capsys):
    assert main(["plan", "t5-base", "--tensor-parallel-size", "1,2", "--quantization", "int8"]) == 2
    error = capsys.readouterr().err
    assert "--tensor-parallel-size 1,2" in error and "--quantization" in error and "leave them out" in error


def test_cli_refuses_an_encoder_decoder_it_does_not_compile(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"architectures": ["MarianMTModel"], "model_type": "marian", '
                                          '"is_encoder_decoder": true}')
    assert main(["plan", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "['MarianMTModel'] hold no encoder-decoder model" in error and "WhisperForConditionalGeneration" in error


@pytest.mark.slow
def test_cli_plans_whisper_small_real_shape(capsys):
    """whisper-small (242M parameters): 0.48 GB of bf16 weights, cross-attention slots of 1500 positions."""
    assert main(["plan", "whisper-small", "--npu", "rngd"]) == 0
    lines = capsys.readouterr().out.splitlines()
    weights, self_kv, cross_kv = _numbers(lines[2])[:3]
    assert weights == pytest.approx(0.483, abs=0.002)
    assert cross_kv == pytest.approx(12 * 2 * 1500 * 768 * 2 / 1e9, abs=1e-3)   # layers x K/V x positions x d x bf16
    assert self_kv == pytest.approx(12 * 2 * 448 * 768 * 2 / 1e9, abs=1e-3)



@pytest.mark.slow
def test_cli_plans_a_split_model_as_json(tmp_path, capsys):
    """``--json`` gives the table's figures per target; ``--tensor-parallel-size 2`` halves each device's
    self-attention pool and the split weights, and adds the all-reduces to the decode step."""
    from optimum_npu.models.seq2seq.tiny import build_seq2seq

    build_seq2seq("T5ForConditionalGeneration").config.save_pretrained(tmp_path)
    records = {}
    for size in (1, 2):
        assert main(["plan", str(tmp_path), "--json", "--npu", "atom", "--tensor-parallel-size", str(size),
                     "--max-seq-len", "32"]) == 0
        (records[size],) = json.loads(capsys.readouterr().out)
    one, two = records[1], records[2]
    assert two["tensor_parallel_size"] == 2 and one["npu"] == two["npu"] == "atom"
    assert two["memory_bytes"]["self_attn_kv"] * 2 == one["memory_bytes"]["self_attn_kv"]
    assert two["memory_bytes"]["weights"] < one["memory_bytes"]["weights"]
    assert two["decode_s_per_token"]["1"] > one["decode_s_per_token"]["1"]   # tiny model: link latency dominates
    assert one["total_bytes"] == sum(one["memory_bytes"].values()) and one["fits"]
