"""Tiny vision encoders (ViT, ResNet) compiled, saved and reloaded once per session (the ``vision_models`` fixture,
registered in conftest.py)."""

from __future__ import annotations

import pytest
import transformers

from optimum_npu import NPUModelForImageClassification
from optimum_npu.models.encoder.tiny_vision import save_vision

#: Two image sizes (ViT at its own 32 and interpolated to 48) x two batch buckets.
VISION_GRID = {"image_sizes": [32, 48], "batch_sizes": [1, 4]}
VISION_CASES = ["ViTForImageClassification", "ResNetForImageClassification"]


@pytest.fixture(scope="session")
def vision_models(tmp_path_factory):
    """architecture -> (reloaded NPU model, eager HF model, artifact dir with the image processor)."""
    models = {}
    for architecture in VISION_CASES:
        root = tmp_path_factory.mktemp(architecture)
        checkpoint = save_vision(architecture, root / "hf")
        npu = NPUModelForImageClassification.from_pretrained(checkpoint, export=True, npu_config=VISION_GRID,
                                                             compile_cache=False)
        npu.save_pretrained(root / "npu")
        npu.release()
        eager = getattr(transformers, architecture).from_pretrained(checkpoint).eval()
        models[architecture] = (NPUModelForImageClassification.from_pretrained(root / "npu"), eager, root / "npu")
    yield models
    for npu, _, _ in models.values():
        npu.release()
