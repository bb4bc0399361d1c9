"""The profiler: every op / fused group on its device's track, category totals, Chrome-trace export, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from optimum_npu import NPUModelForCausalLM
from optimum_npu.device.cost import GraphCostModel
from optimum_npu.device.profiler import Profiler
from optimum_npu.device.spec import PRESETS
from optimum_npu.device.timeline import (CATEGORIES, DEVICE_HDMA, DEVICE_SYNC, EXTERNAL_HDMA, NEURAL_DMA,
                                         NEURAL_ENGINE)
from optimum_npu.models.tiny import build_causal_lm, save_causal_lm
from optimum_npu.schema import Graph, Node, TensorSpec

KNOBS = {"max_seq_len": 128, "batch_size": 2, "decoder_batch_sizes": [1, 2], "prefill_chunk_size": 32,
         "dtype": "float32", "device": 5, "profile": True}


@pytest.fixture(scope="module")
def slow_compute_spec(tmp_path_factory) -> str:
    """atom with a weak fp32 engine, so the tiny model's prefill matmuls are compute-bound."""
    path = tmp_path_factory.mktemp("spec") / "atom-slow.json"
    path.write_text(json.dumps(PRESETS["atom"].to_dict() | {"name": "atom-slow", "peak_flops": {
        "float16": 32e12, "float32": 5e11}}))
    return str(path)


@pytest.fixture(scope="module")
def model(slow_compute_spec):
    compiled = NPUModelForCausalLM.from_model(build_causal_lm("LlamaForCausalLM"),
                                              npu_config=KNOBS | {"npu": slow_compute_spec})
    yield compiled
    compiled.release()


def all_reduce_graph(group_size: int) -> Graph:
    meta = {"shape": [8, 1024], "dtype": "float16"}
    return Graph("tp", (TensorSpec("x", "input", (8, 1024), "float16"),),
                 (Node("ar", "npu.all_reduce.default", [{"ref": "x"}, group_size], {}, meta),), ("ar",))


def generate(model, prompt_len: int = 40, batch: int = 2, new_tokens: int = 4) -> None:
    ids = torch.randint(3, 200, (batch, prompt_len), generator=torch.Generator().manual_seed(prompt_len))
    model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False)


def check_chrome_trace(trace: dict) -> dict[tuple[int, int], list[dict]]:
    """Asserts the Chrome trace format; returns the complete ("X") events per (pid, tid) track."""
    trace = json.loads(json.dumps(trace))  # plain JSON
    tracks: dict[tuple[int, int], list[dict]] = defaultdict(list)
    named = set()
    for event in trace["traceEvents"]:
        assert {"name", "ph", "pid", "tid"} <= set(event)
        if event["ph"] == "M":
            named.add((event["name"], event["pid"], event["tid"]))
            continue
        assert event["ph"] == "X" and isinstance(event["ts"], float) and event["dur"] >= 0
        assert isinstance(event["pid"], int) and isinstance(event["tid"], int)
        tracks[event["pid"], event["tid"]].append(event)
    for (pid, tid), events in tracks.items():
        assert ("process_name", pid, 0) in named and ("thread_name", pid, tid) in named
        starts = [e["ts"] for e in events]
        assert starts == sorted(starts), f"ts not monotonic on track {pid}/{tid}"
        assert all(a["ts"] + a["dur"] <= b["ts"] + 1e-6 for a, b in zip(events, events[1:]))  # no overlap
    return tracks


def test_trace_matches_npu_stats_and_names_every_category(model):
    model.npu_profile.clear()
    generate(model)
    profile, stats = model.npu_profile, model.npu_stats
    tracks = check_chrome_trace(profile.to_chrome_trace())
    assert {pid for pid, _ in tracks} == {5}  # the model runs on npu:5
    op_seconds = sum(e["dur"] for (pid, tid), events in tracks.items() if tid for e in events) / 1e6
    simulated = stats.prefill_s + stats.decode_s
    assert op_seconds == pytest.approx(simulated, rel=0.01)
    assert len(tracks[5, 0]) == len(stats.steps)  # one graph-call span per step
    totals = profile.totals()
    assert totals[NEURAL_ENGINE] > 0 and totals[NEURAL_DMA] > 0 and totals[EXTERNAL_HDMA] > 0
    names = {e["name"] for events in tracks.values() for e in events}
    assert {"fused(linear+silu+mul)", "fused(paged_attention)", "fused(mul+neg+cat+add)"} <= names
    summary = profile.summary()
    assert "npu:5" in summary and all(category in summary for category in CATEGORIES) and "100.0%" in summary


def test_profile_accumulates_until_cleared_and_saves(model, tmp_path):
    model.npu_profile.clear()
    generate(model, new_tokens=2)
    once = len(model.npu_profile.events)
    generate(model, new_tokens=2)
    assert len(model.npu_profile.events) == 2 * once
    path = model.npu_profile.save(tmp_path / "trace.json")
    assert json.loads(path.read_text())["traceEvents"]


def test_profile_is_refused_when_off():
    plain = NPUModelForCausalLM.from_model(build_causal_lm("LlamaForCausalLM"),
                                           npu_config=KNOBS | {"profile": False, "device": 6})
    with pytest.raises(ValueError, match="'profile': True"):
        plain.npu_profile
    plain.release()


def test_collectives_on_each_device_track():
    profiler = Profiler()
    events = GraphCostModel(all_reduce_graph(2), PRESETS["atom"], "float16").timeline(torch.zeros(1, 1).long())
    devices = [SimpleNamespace(name=f"npu:{i} (atom)", clock_s=0.5 * i) for i in range(2)]
    profiler.record_call(devices, "decoder_batch_1", "decode", events)
    profiler.add("npu:0 (atom)", DEVICE_SYNC, "wait for npu:1", 0.1, 0.4)
    tracks = check_chrome_trace(profiler.to_chrome_trace())
    assert {pid for pid, _ in tracks} == {0, 1}
    for device in profiler.devices:
        assert profiler.totals(device)[DEVICE_HDMA] > 0 and profiler.totals(device)[DEVICE_SYNC] > 0
    assert profiler.totals("npu:0 (atom)")[DEVICE_SYNC] == pytest.approx(profiler.totals("npu:1 (atom)")[
        DEVICE_SYNC] + 0.4)
    assert tracks[1, 0][0]["ts"] == pytest.approx(0.5e6)  # npu:1's call starts at its own clock
    with pytest.raises(ValueError, match="unknown profiler category"):
        profiler.add("npu:0", "GPU", "x", 0.0, 1.0)


def test_tensor_parallel_run_records_every_device():
    try:
        model = NPUModelForCausalLM.from_model(build_causal_lm("LlamaForCausalLM"), npu_config=KNOBS | {
            "device": 0, "tensor_parallel_size": 2})
    except ValueError as err:
        pytest.skip(f"tensor parallelism unavailable: {err}")
    generate(model, batch=1)
    tracks = check_chrome_trace(model.npu_profile.to_chrome_trace())
    assert {pid for pid, _ in tracks} == {0, 1}
    for device in model.npu_profile.devices:
        totals = model.npu_profile.totals(device)
        assert totals[DEVICE_HDMA] > 0 and totals[DEVICE_SYNC] > 0
        assert sum(totals.values()) == pytest.approx(model.npu_stats.prefill_s + model.npu_stats.decode_s, rel=0.01)
    model.release()


@pytest.mark.slow
def test_cli_profile_end_to_end(tmp_path):
    checkpoint = save_causal_lm(tmp_path / "ckpt", "LlamaForCausalLM")
    artifact = tmp_path / "llama-npu"
    compiled = NPUModelForCausalLM.from_pretrained(checkpoint, export=True, npu_config={
        "max_seq_len": 64, "prefill_chunk_size": 16, "device": 7})
    compiled.save_pretrained(artifact)
    compiled.release()
    out = tmp_path / "trace.json"
    run = subprocess.run([sys.executable, "-m", "optimum_npu.cli", "profile", str(artifact), "--prompt",
                          "Hello there", "--max-new-tokens", "3", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "NPU profile of npu:0" in run.stdout and "Neural DMA" in run.stdout and str(out) in run.stdout
    tracks = check_chrome_trace(json.loads(out.read_text()))
    assert len(tracks[0, 0]) == 1 + 2  # one prefill chunk (11 tokens), two decode steps
    assert any(e["name"].startswith("fused(") for events in tracks.values() for e in events)
