"""Auto classes: pick the NPU model class from the checkpoint (export) or the artifact (load).

``NPUAutoModel.from_pretrained(...)`` works for any supported model; the task-named classes
(``NPUAutoModelForCausalLM``, ``NPUAutoModelForImageTextToText``) also check the task. The
family and its class come from the family registry (``models/families.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

from transformers import AutoConfig

from optimum_npu.compile.artifact import ArtifactError
from optimum_npu.models.base import HUB_KWARGS, resolve_checkpoint
from optimum_npu.models.families import FAMILIES, Family, family_named, family_of_config
from optimum_npu.models.registry import supported_architectures
from optimum_npu.schema import NPU_CONFIG_FILE
from optimum_npu.untrusted import expect_dict, load_json


class NPUAutoModel:
    """Loads or compiles any supported model with the NPU class of its family."""

    families: tuple[str, ...] = tuple(FAMILIES)

    @classmethod
    def from_pretrained(cls, model_id: str | os.PathLike, *, export: bool = False, **kwargs):
        """As the family class's ``from_pretrained``; the family comes from the artifact or config.json."""
        path, family = family_of(model_id, {k: kwargs[k] for k in HUB_KWARGS if k in kwargs})
        if family is None or family.name not in cls.families:
            supported = [a for f in cls.families for a in supported_architectures(f)]
            owner = f" (use {family.model_class.__name__})" if family is not None else ""
            raise ValueError(f"{model_id} (family {family.name if family else 'unknown'}) is not supported by "
                             f"{cls.__name__}{owner}; supported architectures: {', '.join(supported)}")
        return family.model_class.from_pretrained(Path(path), export=export, **kwargs)


def family_of(model_id: str | os.PathLike, hub_kwargs: dict) -> tuple[Path, Family | None]:
    """The local path of a checkpoint or artifact and its model family (None when no family supports it)."""
    path = resolve_checkpoint(model_id, hub_kwargs)
    if (path / NPU_CONFIG_FILE).is_file():
        origin = str(path / NPU_CONFIG_FILE)
        stored = expect_dict(load_json(path / NPU_CONFIG_FILE, what=origin, error=ArtifactError), origin,
                             ArtifactError)
        try:
            return path, family_named(stored.get("family", "decoder"), origin)
        except ValueError as err:
            raise ArtifactError(str(err)) from None
    claimed = next((f for f in FAMILIES.values() if f.recognizes is not None and f.recognizes(path)), None)
    return path, claimed or family_of_config(AutoConfig.from_pretrained(path))


class NPUAutoModelForCausalLM(NPUAutoModel):
    """Text-generation models (decoder-only LMs)."""

    families = ("decoder",)


class NPUAutoModelForImageTextToText(NPUAutoModel):
    """Vision-language models (Qwen2-VL, Qwen2.5-VL, Qwen3-VL)."""

    families = ("vlm",)
