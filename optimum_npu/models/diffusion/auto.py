"""Auto pipeline classes: the compiled pipeline class of a task, chosen by the pipeline's kind.

The kind comes from the artifact (``npu_config.json``'s ``pipeline``, a key of ``PIPELINE_COMPONENTS``) or,
when compiling, from the Diffusers folder's ``model_index.json`` ``_class_name`` (looked up in ``KINDS``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from optimum_npu.compile.artifact import ArtifactError
from optimum_npu.models.base import HUB_KWARGS, resolve_checkpoint
from optimum_npu.models.diffusion.pipelines import PIPELINES, SD, SD3, SDXL
from optimum_npu.schema import NPU_CONFIG_FILE
from optimum_npu.untrusted import expect_dict, load_json

MODEL_INDEX = "model_index.json"
#: Diffusers pipeline class names (model_index.json) -> the kind compiled for them.
KINDS = {**{name: SD for name in ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline",
                                  "StableDiffusionInpaintPipeline")},
         **{name: SDXL for name in ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline",
                                    "StableDiffusionXLInpaintPipeline")},
         **{name: SD3 for name in ("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline",
                                   "StableDiffusion3InpaintPipeline")}}


def is_diffusers_folder(path: Path) -> bool:
    """A Diffusers pipeline folder (``model_index.json``) or a compiled pipeline (family ``diffusion``)."""
    return (Path(path) / MODEL_INDEX).is_file()


def pipeline_kind(path: Path) -> str:
    """The kind of a compiled pipeline or a Diffusers folder (untrusted names checked against the tables)."""
    compiled = (path / NPU_CONFIG_FILE).is_file()
    document = path / (NPU_CONFIG_FILE if compiled else MODEL_INDEX)
    data = expect_dict(load_json(document, what=str(document), error=ArtifactError), str(document), ArtifactError)
    name = data.get("pipeline" if compiled else "_class_name")
    kind = name if compiled and name in (SD, SDXL, SD3) else KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise ValueError(f"{document}: pipeline {str(name)[:80]!r} is not supported; supported Diffusers pipelines: "
                         f"{sorted(KINDS)}")
    return kind


class NPUAutoPipelineForText2Image:
    """Compiles or loads any supported pipeline as its text-to-image NPU class."""

    task = "text2image"

    @classmethod
    def from_pretrained(cls, model_id: str | os.PathLike, **kwargs: Any):
        """As the NPU pipeline class's ``from_pretrained``; the class comes from the pipeline kind."""
        path = resolve_checkpoint(model_id, {k: kwargs.pop(k) for k in HUB_KWARGS if k in kwargs})
        return PIPELINES[(pipeline_kind(path), cls.task)].from_pretrained(path, **kwargs)


class NPUAutoPipelineForImage2Image(NPUAutoPipelineForText2Image):
    task = "image2image"


class NPUAutoPipelineForInpainting(NPUAutoPipelineForText2Image):
    task = "inpainting"


#: The family's class: a compiled pipeline loads as the text-to-image class of its kind.
NPUDiffusionPipeline = NPUAutoPipelineForText2Image
