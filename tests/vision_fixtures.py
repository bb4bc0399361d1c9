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


def compile_save_reload(model_class: type, checkpoint, knobs: dict, target):
    """``model_class`` compiled from ``checkpoint`` (no compile cache), saved to ``target``, released, and the saved
    artifact loaded back (what every test of these classes runs on)."""
    compiled = model_class.from_pretrained(checkpoint, export=True, npu_config=knobs, compile_cache=False)
    compiled.save_pretrained(target)
    compiled.release()
    return model_class.from_pretrained(target)


@pytest.fixture(scope="session")
def vision_models(tmp_path_factory):
    """architecture -> (reloaded NPU model, eager HF model, artifact dir with the image processor)."""
    models = {}
    for architecture in VISION_CASES:
        root = tmp_path_factory.mktemp(architecture)
        checkpoint = save_vision(architecture, root / "hf")
        npu = compile_save_reload(NPUModelForImageClassification, checkpoint, VISION_GRID, root / "npu")
        models[architecture] = (npu, getattr(transformers, architecture).from_pretrained(checkpoint).eval(),
                                root / "npu")
    yield models
    for npu, _, _ in models.values():
        npu.release()
