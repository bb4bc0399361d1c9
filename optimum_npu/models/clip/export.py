"""Compile CLIP: its text and vision towers as two encoder submodules of one artifact.

Layout: ``text_model/`` and ``vision_model/`` (each an encoder artifact without its own manifest: graphs,
weights, ``config.json``, ``npu_config.json``), ``logit_scale.safetensors`` (the one weight outside the
towers), ``config.json``, tokenizer and image processor files, ``npu_config.json`` and one manifest over all.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from transformers import CLIPModel, CLIPTextModelWithProjection, CLIPVisionModelWithProjection, PreTrainedModel

from optimum_npu.compile.artifact_write import write_atomically
from optimum_npu.compile.weights import save_weights
from optimum_npu.device.spec import resolve_spec
from optimum_npu.models.clip.npu_config import NPUCLIPConfig
from optimum_npu.models.encoder.export import compile_encoder
from optimum_npu.models.encoder.files import ENCODER_FILES
from optimum_npu.models.encoder.tasks import IMAGE_EMBEDDING, TEXT_EMBEDDING
from optimum_npu.schema import ARTIFACT_FORMAT_VERSION, MANIFEST_FILE, NPU_CONFIG_FILE
from optimum_npu.version import __version__

#: Submodule name -> its folder in the artifact (constants: never built from a file).
SUBMODULE_DIRS = {"text": "text_model", "vision": "vision_model"}
#: The weight outside the towers: the temperature of the image-text logits.
LOGIT_SCALE_FILE = "logit_scale.safetensors"


def towers(hf_model: CLIPModel) -> dict[str, PreTrainedModel]:
    """The two towers of ``hf_model`` as HF classes sharing its modules (weights keep their checkpoint names:
    ``text_model.*``, ``text_projection.weight``, ``vision_model.*``, ``visual_projection.weight``)."""
    text = CLIPTextModelWithProjection(hf_model.config.text_config)
    text.text_model, text.text_projection = hf_model.text_model, hf_model.text_projection
    vision = CLIPVisionModelWithProjection(hf_model.config.vision_config)
    vision.vision_model, vision.visual_projection = hf_model.vision_model, hf_model.visual_projection
    for tower in (text, vision):
        tower.config.architectures = [type(tower).__name__]
        tower.eval()
    return {"text": text, "vision": vision}


def compile_clip(hf_model: CLIPModel, config: NPUCLIPConfig, target: Path, processor_dir: Path | None = None) -> Path:
    """Writes the artifact of ``hf_model`` atomically to ``target`` (``config``: both towers resolved)."""
    parts = towers(hf_model)
    tasks = {"text": TEXT_EMBEDDING, "vision": IMAGE_EMBEDDING}

    def fill(root: Path) -> None:
        for name, tower in parts.items():
            folder = root / SUBMODULE_DIRS[name]
            compile_encoder(tower, type(tower).__name__, tasks[name], config.tower(name), folder)
            (folder / MANIFEST_FILE).unlink()   # the top-level manifest covers it
        dtype = getattr(torch, config.dtype)
        save_weights(root / LOGIT_SCALE_FILE, {"logit_scale": hf_model.logit_scale.detach().to(dtype).clone()})
        hf_model.config.save_pretrained(root)
        for name in ENCODER_FILES if processor_dir else ():
            if (Path(processor_dir) / name).is_file():
                shutil.copy2(Path(processor_dir) / name, root / name)
        document = {"architecture": "CLIPModel", "family": "clip", **config.to_dict(), "submodules": SUBMODULE_DIRS,
                    "npu_spec": resolve_spec(config.npu).to_dict(), "library_version": __version__,
                    "format_version": ARTIFACT_FORMAT_VERSION, "torch_version": torch.__version__}
        (root / NPU_CONFIG_FILE).write_text(json.dumps(document, indent=1))

    return write_atomically(target, fill)
