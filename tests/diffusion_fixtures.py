"""The tiny Stable Diffusion pipeline compiled once per session (the ``sd_pipeline`` fixture, registered in
conftest.py): shared by the pipeline tests (``test_diffusion.py``) and the component tests
(``test_diffusion_components.py``)."""

from __future__ import annotations

import pytest
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from optimum_npu import NPUStableDiffusionPipeline
from optimum_npu.models.diffusion.tiny import build_sd_pipeline

RESOLUTIONS = [[32, 32], [32, 48]]
CONFIG = {"unet": {"resolutions": RESOLUTIONS, "batch_size": 2, "guidance": [True, False]}}


@pytest.fixture(scope="session")
def sd_pipeline(tmp_path_factory):
    """(reloaded NPU pipeline, eager pipeline, artifact dir): compiled at two resolutions, batch 2, both guidance
    modes, saved and reloaded; released at the end."""
    eager = build_sd_pipeline()
    eager.set_progress_bar_config(disable=True)
    compiled = NPUStableDiffusionPipeline.from_pipeline(eager, CONFIG, compile_cache=False)
    root = tmp_path_factory.mktemp("sd") / "npu"
    compiled.save_pretrained(root)
    compiled.release()
    npu = NPUStableDiffusionPipeline.from_pretrained(root)
    npu.set_progress_bar_config(disable=True)
    yield npu, eager, root
    npu.release()


@pytest.fixture
def booby_trapped(monkeypatch):
    """Every Diffusers / Transformers module forward of the pipeline raises: the graphs must be what runs."""
    def trap(*args, **kwargs):
        raise AssertionError("an HF module's forward ran")

    for cls in (UNet2DConditionModel, AutoencoderKL, CLIPTextModel, CLIPTextModelWithProjection):
        monkeypatch.setattr(cls, "forward", trap)
    monkeypatch.setattr(AutoencoderKL, "decode", trap)
    monkeypatch.setattr(AutoencoderKL, "encode", trap)
