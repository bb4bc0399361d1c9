"""Stable Diffusion 3 (SD3 transformer, two CLIP encoders with projection, T5) against eager Diffusers, and the
transformer split over two devices against one (tiny pipeline built in code, fp32)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optimum_npu import NPUStableDiffusion3Pipeline
from optimum_npu.device.device import DeviceRegistry
from optimum_npu.models.diffusion.call_check import NotCompiledError
from optimum_npu.models.diffusion.tiny import build_sd3_pipeline

CALL = dict(prompt=["a red cat", "a blue dog"], height=32, width=32, num_inference_steps=2, guidance_scale=5.0,
            output_type="np")

pytestmark = pytest.mark.slow   # two SD3 compiles (T5 at 256 tokens)


@pytest.fixture(scope="module")
def eager():
    pipe = build_sd3_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _compiled(eager, tmp_path, tp: int):
    config = {"transformer": {"resolutions": [[32, 32]], "batch_size": 2, "tensor_parallel_size": tp,
                              "device": list(range(1, tp + 1))}}
    registry = DeviceRegistry()
    compiled = NPUStableDiffusion3Pipeline.from_pipeline(eager, config, compile_cache=False, device_registry=registry)
    compiled.save_pretrained(tmp_path / f"tp{tp}")
    compiled.release()
    pipe = NPUStableDiffusion3Pipeline.from_pretrained(tmp_path / f"tp{tp}", device_registry=registry,
                                                       npu_config={"transformer": {"device": list(range(1, tp + 1))}})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_sd3_equals_eager_and_tensor_parallel_2_equals_1(eager, tmp_path):
    reference = eager(generator=torch.Generator().manual_seed(0), **CALL).images
    images = {}
    for tp in (1, 2):
        pipe = _compiled(eager, tmp_path, tp)
        try:
            images[tp] = pipe(generator=torch.Generator().manual_seed(0), **CALL).images
            stats = pipe.npu_stats
            assert set(stats.seconds_by_component) == {"text_encoder", "text_encoder_2", "text_encoder_3",
                                                       "transformer", "vae_decoder"}
            assert sorted(d for d, owners in stats.memory.items() if "transformer" in owners) == list(range(1, tp + 1))
            with pytest.raises(NotCompiledError, match="max_sequence_length=128 is not compiled"):
                pipe(max_sequence_length=128, **CALL)
        finally:
            pipe.release()
    assert np.abs(images[1] - reference).max() < 1e-4
    assert np.abs(images[2] - images[1]).max() < 1e-4
    shards = sorted(p.name for p in (tmp_path / "tp2" / "transformer").glob("*.safetensors"))
    assert shards == ["model-tp0-of-2.safetensors", "model-tp1-of-2.safetensors"]
    graph = (tmp_path / "tp2" / "transformer" / "graphs" / "transformer_b4_h32_w32.graph.json").read_text()
    assert "npu.all_reduce.default" in graph and "npu.all_gather.default" in graph
