"""Prefill attention on the GPU presets: flash-style (scores on chip) and a compute factor that follows the
measured FlashAttention-3 throughput over the query length (docs/cost_model.md, "Prefill")."""

from __future__ import annotations

import pytest
import torch

from optimum_npu.device.calibration import (FA3_H100_TFLOPS, efficiency, keeps_attention_scores_on_chip,
                                            prefill_attention_compute)
from optimum_npu.device.cost import GraphCostModel
from optimum_npu.device.spec import PRESETS, NPUSpec
from optimum_npu.models.decoder.estimate import meta_cost_models
from optimum_npu.models.tiny import build_causal_lm

KNOBS = {"max_seq_len": 256, "batch_size": 1, "decoder_batch_sizes": [1], "prefill_chunk_size": 64,
         "dtype": "bfloat16"}


@pytest.fixture(scope="module")
def prefill_graph():
    _, costs = meta_cost_models(build_causal_lm("LlamaForCausalLM").config, KNOBS, ["prefill"])
    return costs["prefill"].index.graph


def test_the_factor_follows_the_measured_curve():
    h100 = 620.73 / 989
    assert prefill_attention_compute("h100-sxm", 16384) == pytest.approx(h100)
    assert prefill_attention_compute("h100-sxm", 2048) == pytest.approx(565.544 / 989)
    assert prefill_attention_compute("h100-sxm", 100) == prefill_attention_compute("h100-sxm", 512) \
        == pytest.approx(430.32 / 989)                                          # not extrapolated below 512
    assert prefill_attention_compute("h100-sxm", 10**6) == pytest.approx(h100)
    between = prefill_attention_compute("h100-sxm", 1448)                       # ~ halfway (log2) 1k..2k
    assert 517.099 / 989 < between < 565.544 / 989
    lengths = [256, 512, 700, 1024, 3000, 4096, 8192, 16384, 40000]
    factors = [prefill_attention_compute("a100-80gb", n) for n in lengths]
    assert factors == sorted(factors) and factors[-1] == pytest.approx(0.73)
    assert prefill_attention_compute("h200-sxm", 4096) == prefill_attention_compute("h100-sxm", 4096)
    assert len(FA3_H100_TFLOPS) == 6
    for spec in ("atom", "rngd", "custom-npu"):                                 # NPUs keep their constant
        assert prefill_attention_compute(spec, 2048) == efficiency(spec, "attention").compute


def test_gpu_attention_keeps_scores_on_chip_and_uses_the_curve(prefill_graph):
    h100 = PRESETS["h100-sxm"]
    assert h100.sram_bytes == 0 and keeps_attention_scores_on_chip("h100-sxm")
    cost = GraphCostModel(prefill_graph, h100, "bfloat16")
    assert cost.fused_groups == ["fused(paged_attention)"] * 2                  # nothing else fuses without SRAM
    positions = torch.arange(64).view(1, 64)
    events = [e for e in cost.timeline(positions) if e.name == "fused(paged_attention)"]
    for event in events:
        expected = event.args["flops"] / (989e12 * prefill_attention_compute("h100-sxm", 64))
        assert event.args["compute_us"] == pytest.approx(expected * 1e6, rel=1e-12)
    # the same hardware under another name is a custom spec: standard attention, scores through DRAM
    custom = NPUSpec.from_dict(h100.to_dict() | {"name": "my-gpu"})
    unfused = GraphCostModel(prefill_graph, custom, "bfloat16")
    assert unfused.fused_groups == []
    assert unfused.call_seconds(positions)[1] > cost.call_seconds(positions)[1]


def test_h200_preset_is_the_public_figures():
    h200 = PRESETS["h200-sxm"]
    assert (h200.dram_bytes, h200.dram_bandwidth, h200.peak_flops["bfloat16"]) == (141e9, 4.8e12, 989e12)
    assert "H200" in h200.source and "borrowed" in efficiency("h200-sxm", "gemm").source
