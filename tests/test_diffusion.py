"""Diffusers pipelines compiled per component: parity with eager Diffusers, bucket refusals, artifact round trip.

One tiny Stable Diffusion pipeline (Diffusers' fast-test sizes, a CLIP tokenizer built in code) is compiled
once per session (`tests/diffusion_fixtures.py`) at two resolutions, batch 2, with and without classifier-free
guidance, saved and reloaded; every test runs the reloaded artifact.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from transformers import CLIPTextModel

from optimum_npu import (NPUAutoPipelineForImage2Image, NPUAutoPipelineForText2Image, NPUStableDiffusionPipeline)
from optimum_npu.compile.artifact import ArtifactError
from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.models.diffusion.call_check import NotCompiledError
from optimum_npu.models.diffusion.tiny import build_sd_pipeline

PROMPTS = ["a red cat", "a blue dog"]
STEPS = 2


@pytest.fixture(scope="module")
def sd(sd_pipeline):
    """(reloaded NPU pipeline, eager pipeline, artifact dir): the session's tiny SD pipeline."""
    return sd_pipeline


def _images(pipe, **kwargs):
    return pipe(prompt=PROMPTS, num_inference_steps=STEPS, output_type="np",
                generator=torch.Generator().manual_seed(0), **kwargs).images


def _parity(sd, height, width, guidance_scale, monkeypatch_trap):
    npu, eager, _ = sd
    reference = _images(eager, height=height, width=width, guidance_scale=guidance_scale)
    monkeypatch_trap()
    npu.npu_stats.reset()
    images = _images(npu, height=height, width=width, guidance_scale=guidance_scale)
    assert images.shape == (2, height, width, 3)
    assert np.abs(images - reference).max() < 1e-4
    assert np.abs(reference).max() > 0 and np.std(reference) > 1e-3   # a real image, not a constant
    _check_stats(npu.npu_stats, f"unet_b{4 if guidance_scale > 1 else 2}_h{height}_w{width}")


def _check_stats(stats, unet_graph: str) -> None:
    """One call's figures: per component, one denoiser call per step on the bucket asked, memory per device."""
    assert stats.images == 2
    assert set(stats.seconds_by_component) == {"text_encoder", "unet", "vae_decoder"}
    assert len(stats.denoising_steps) == STEPS and all(s > 0 for s in stats.denoising_steps)
    assert [c.graph for c in stats.calls if c.component == "unet"] == [unet_graph] * STEPS
    assert stats.seconds_per_image == pytest.approx(stats.seconds / 2)
    assert set(stats.memory) == {0} and stats.memory_per_device[0] == sum(
        sum(parts.values()) for parts in stats.memory[0].values())
    assert "per denoising step" in str(stats)


@pytest.mark.parametrize("height,width,guidance_scale", [(32, 32, 5.0), (32, 48, 1.0)])
def test_images_equal_eager_diffusers(sd, height, width, guidance_scale, request):
    _parity(sd, height, width, guidance_scale, lambda: request.getfixturevalue("booby_trapped"))


@pytest.mark.slow
@pytest.mark.parametrize("height,width,guidance_scale", [(32, 32, 1.0), (32, 48, 7.5)])
def test_images_equal_eager_diffusers_other_buckets(sd, height, width, guidance_scale, request):
    _parity(sd, height, width, guidance_scale, lambda: request.getfixturevalue("booby_trapped"))


@pytest.mark.parametrize("kwargs,match", [
    ({"height": 48, "width": 48}, r"height=48, width=48 is not compiled \(resolutions=\[\[32, 32\], \[32, 48\]\]\)"),
    ({"height": 32, "width": 32, "num_images_per_prompt": 2}, r"4 images .* batch_size=2"),
    ({"height": 32, "width": 32, "clip_skip": 1}, "clip_skip=1 is not compiled"),
])
def test_uncompiled_calls_are_refused_before_compute(sd, kwargs, match):
    npu, _, _ = sd
    npu.npu_stats.reset()
    with pytest.raises(NotCompiledError, match=match):
        _images(npu, guidance_scale=5.0, **kwargs)
    assert npu.npu_stats.calls == []


@pytest.mark.slow
def test_guidance_mode_not_compiled_is_refused(tmp_path):
    eager = build_sd_pipeline()
    npu = NPUStableDiffusionPipeline.from_pipeline(eager, {"unet": {"resolutions": [[32, 32]], "guidance": [True]},
                                                           "batch_size": 2}, compile_cache=False)
    try:
        with pytest.raises(NotCompiledError, match=r"guidance_scale=1.0 runs without .*guidance=\[True, False\]"):
            _images(npu, guidance_scale=1.0)
        assert npu.npu_stats.calls == []
    finally:
        npu.release()


def test_auto_classes_dispatch_on_the_stored_kind(sd):
    _, _, root = sd
    pipe = NPUAutoPipelineForText2Image.from_pretrained(root)
    try:
        assert type(pipe) is NPUStableDiffusionPipeline
    finally:
        pipe.release()
    with pytest.raises(ValueError, match="compiled without the VAE encoder"):
        NPUAutoPipelineForImage2Image.from_pretrained(root)


def test_compile_knobs_cannot_change_at_load(sd):
    _, _, root = sd
    with pytest.raises(NPUConfigError, match=r"\['batch_size'\] differ from the compiled artifact"):
        NPUStableDiffusionPipeline.from_pretrained(root, npu_config={"unet": {"batch_size": 4}})


def test_tampered_artifact_is_refused(sd, tmp_path):
    _, _, root = sd
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    graph = copy / "unet" / "graphs" / "unet_b4_h32_w32.graph.json"
    graph.write_text(graph.read_text().replace("aten.silu.default", "aten.gelu.default", 1))
    with pytest.raises(ArtifactError, match="does not match its sha256"):
        NPUStableDiffusionPipeline.from_pretrained(copy)


def test_unknown_pipeline_kind_in_artifact_is_refused(sd, tmp_path):
    """A consistent manifest over an edited document (an attacker re-signs it): the kind is a closed table."""
    from optimum_npu.compile.artifact import write_manifest

    _, _, root = sd
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    document = json.loads((copy / "npu_config.json").read_text())
    document["pipeline"] = "os.system"
    (copy / "npu_config.json").write_text(json.dumps(document))
    write_manifest(copy)
    with pytest.raises(NPUConfigError, match=r"pipeline='os.system' must be one of"):
        NPUStableDiffusionPipeline.from_pretrained(copy)


def test_weightless_estimate_equals_simulated_call(sd):
    """The planner's meta-capture estimate of a call is what the device engine charged for that call."""
    from optimum_npu.models.diffusion.estimate import estimate_pipeline
    from optimum_npu.models.diffusion.npu_config import NPUDiffusionConfig
    from optimum_npu.models.diffusion.real_shapes import weightless_pipeline

    npu, eager, _ = sd
    stand_in = weightless_pipeline({"text_encoder": (CLIPTextModel, eager.text_encoder.config.to_dict()),
                          "unet": dict(eager.unet.config), "vae": dict(eager.vae.config)})
    stand_in.tokenizer = eager.tokenizer
    config = NPUDiffusionConfig(resolutions=((32, 32),), batch_size=2, guidance=(True,))
    (estimate,) = estimate_pipeline(stand_in, config, steps=STEPS)
    npu.npu_stats.reset()
    _images(npu, height=32, width=32, guidance_scale=5.0)
    measured = npu.npu_stats.seconds_by_component
    assert estimate.seconds_by_component == pytest.approx(measured, rel=1e-9)
    assert estimate.seconds_per_image == pytest.approx(npu.npu_stats.seconds_per_image, rel=1e-9)
    assert estimate.components["unet"].memory["weights"] == npu.npu_stats.memory[0]["unet"]["weights"]


def test_components_on_their_devices_in_the_profiler(sd):
    from optimum_npu.device.device import DeviceRegistry

    _, _, root = sd
    pipe = NPUStableDiffusionPipeline.from_pretrained(root, device_registry=DeviceRegistry(), npu_config={
        "text_encoder": {"device": 0}, "unet": {"device": 1}, "vae": {"device": 2}, "profile": True})
    pipe.set_progress_bar_config(disable=True)
    try:
        _images(pipe, height=32, width=48, guidance_scale=1.0)
        calls = {(call.device.split(" ")[0], call.args["phase"]) for call in pipe.npu_profile.calls}
        assert calls == {("npu:0", "text_encoder"), ("npu:1", "unet"), ("npu:2", "vae_decoder")}
        assert sorted(pipe.npu_stats.memory) == [0, 1, 2]
        assert set(pipe.npu_stats.memory[1]) == {"unet"}
    finally:
        pipe.release()
