"""The command line and the compile cache for Diffusers pipelines (subprocesses and second compiles: slow tier)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from optimum_npu import NPUStableDiffusionPipeline
from optimum_npu.compile.artifact import write_manifest
from optimum_npu.hub.cache import CompileCache
from optimum_npu.models.diffusion.tiny import build_sd_pipeline

pytestmark = pytest.mark.slow

from hub_fixtures import hub, hub_server  # noqa: E402,F401  (fixtures)
CONFIG = {"unet": {"resolutions": [[32, 32]], "batch_size": 1}}


def _cli(*args: str, cwd) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "optimum_npu.cli", *args], capture_output=True, text=True,
                            cwd=cwd, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_export_recognises_model_index_and_generate_image_writes_a_png(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTIMUM_NPU_CACHE", str(tmp_path / "cache"))
    build_sd_pipeline().save_pretrained(tmp_path / "sd")
    exported = _cli("export", "sd", "out", "--pipeline-config", '{"unet": {"resolutions": [[32, 32]]}}', cwd=tmp_path)
    assert "text_encoder/text_b1_s16, unet/unet_b2_h32_w32, vae_decoder/vae_decoder_b1_h32_w32" in exported.stdout
    generated = _cli("generate-image", "out", "--prompt", "a cat", "--steps", "2", "--output", "cat.png", "--trace",
                     "trace.json", cwd=tmp_path)
    assert "wrote cat.png (32x32)" in generated.stdout and "per denoising step" in generated.stdout
    assert (tmp_path / "cat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert '"phase": "unet"' in (tmp_path / "trace.json").read_text()
    refused = subprocess.run([sys.executable, "-m", "optimum_npu.cli", "generate-image", "out", "--height", "64",
                              "--width", "64", "--steps", "1"], capture_output=True, text=True, cwd=tmp_path)
    assert refused.returncode == 2 and "height=64, width=64 is not compiled" in refused.stderr


def test_plan_image_estimates_a_diffusers_folder_from_its_configs(tmp_path):
    build_sd_pipeline().save_pretrained(tmp_path / "sd")
    result = _cli("plan-image", "sd", "--resolution", "32x32", "--steps", "10", "--npu", "atom,h100-sxm", cwd=tmp_path)
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith(("atom", "h100-sxm"))]
    assert [row[0] for row in rows] == ["atom", "h100-sxm"]
    assert float(rows[0][1]) > float(rows[1][1]) > 0   # seconds per image: the faster chip is faster


def test_second_compile_is_a_verified_cache_hit_and_a_poisoned_entry_is_recompiled(tmp_path):
    cache = CompileCache(tmp_path / "cache")
    eager = build_sd_pipeline()
    eager.set_progress_bar_config(disable=True)
    first = NPUStableDiffusionPipeline.from_pipeline(eager, CONFIG, compile_cache=cache)
    call = dict(prompt="a cat", num_inference_steps=2, output_type="np", height=32, width=32)
    reference = first(generator=torch.Generator().manual_seed(0), **call).images
    first.release()
    (entry,) = [p for p in (tmp_path / "cache").rglob("unet") if p.is_dir()]
    second = NPUStableDiffusionPipeline.from_pipeline(eager, CONFIG, compile_cache=cache)
    try:
        assert np.abs(second(generator=torch.Generator().manual_seed(0), **call).images - reference).max() == 0
    finally:
        second.release()
    weights = load_file(entry / "model.safetensors")   # a poisoned entry, re-signed: the hit check compares weights
    name = next(iter(weights))
    weights[name] = weights[name] + 1
    save_file(weights, entry / "model.safetensors")
    write_manifest(entry.parent)
    third = NPUStableDiffusionPipeline.from_pipeline(eager, CONFIG, compile_cache=cache)
    try:
        assert np.abs(third(generator=torch.Generator().manual_seed(0), **call).images - reference).max() == 0
    finally:
        third.release()


def test_push_and_pull_a_pipeline_with_its_card(hub, tmp_path):
    from huggingface_hub import ModelCard

    from hub_fixtures import new_repo_id
    from hub_server import TOKEN

    eager = build_sd_pipeline()
    eager.set_progress_bar_config(disable=True)
    pipe = NPUStableDiffusionPipeline.from_pipeline(eager, CONFIG, compile_cache=False)
    repo = new_repo_id("sd")
    call = dict(prompt="a cat", num_inference_steps=2, output_type="np", height=32, width=32)
    try:
        pipe.push_to_hub(repo, token=TOKEN, private=True)
        reference = pipe(generator=torch.Generator().manual_seed(0), **call).images
    finally:
        pipe.release()
    card = ModelCard.load(repo, token=TOKEN).text
    assert "NPUAutoPipelineForText2Image" in card and "`unet` | `unet_b2_h32_w32`" in card
    from optimum_npu import NPUAutoPipelineForText2Image

    pulled = NPUAutoPipelineForText2Image.from_pretrained(repo, token=TOKEN, cache_dir=tmp_path / "pull")
    pulled.set_progress_bar_config(disable=True)
    try:
        assert np.abs(pulled(generator=torch.Generator().manual_seed(0), **call).images - reference).max() == 0
    finally:
        pulled.release()


def test_plan_recognises_a_diffusers_folder_and_plans_seconds_per_image(tmp_path):
    """``optimum-npu plan`` on a Diffusers folder prints the ``plan-image`` table at the pipeline's native size."""
    pipe = build_sd_pipeline()
    pipe.save_pretrained(tmp_path / "sd")
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    planned = _cli("plan", "sd", "--npu", "atom,h100-sxm", cwd=tmp_path).stdout
    assert planned.startswith(f"sd at {side}x{side}, 50 steps, with guidance")
    rows = [line.split() for line in planned.splitlines() if line.startswith(("atom", "h100-sxm"))]
    assert [row[0] for row in rows] == ["atom", "h100-sxm"]
    assert float(rows[0][1]) > float(rows[1][1]) > 0   # seconds per image: the faster chip is faster
