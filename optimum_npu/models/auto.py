"""Auto classes: pick the NPU model class from the checkpoint (export) or the artifact (load).

``NPUAutoModel.from_pretrained(...)`` works for any supported model; the task-named classes
(``NPUAutoModelForCausalLM``, ``NPUAutoModelForImageTextToText``) also check the task.
"""

from __future__ import annotations

import os
from pathlib import Path

from transformers import AutoConfig

from optimum_npu.compile.artifact import ArtifactError
from optimum_npu.models.base import HUB_KWARGS, resolve_checkpoint
from optimum_npu.models.registry import REGISTRY, supported_architectures
from optimum_npu.schema import NPU_CONFIG_FILE
from optimum_npu.untrusted import expect_dict, load_json

#: The model families an artifact may name (dictionary keys only, never resolved otherwise).
FAMILIES = ("decoder", "vlm")


def _family_classes() -> dict[str, type]:
    from optimum_npu.models.decoder.modeling import NPUModelForCausalLM
    from optimum_npu.models.vlm.modeling import NPUModelForImageTextToText

    return {"decoder": NPUModelForCausalLM, "vlm": NPUModelForImageTextToText}


class NPUAutoModel:
    """Loads or compiles any supported model with the NPU class of its family."""

    families: tuple[str, ...] = ("decoder", "vlm")

    @classmethod
    def from_pretrained(cls, model_id: str | os.PathLike, *, export: bool = False, **kwargs):
        """As the family class's ``from_pretrained``; the family comes from the artifact or config.json."""
        path, family = family_of(model_id, {k: kwargs[k] for k in HUB_KWARGS if k in kwargs})
        if family not in cls.families:
            supported = [a for f in cls.families for a in supported_architectures(f)]
            raise ValueError(f"{model_id} (family {family or 'unknown'}) is not supported by {cls.__name__}; "
                             f"supported architectures: {', '.join(supported)}")
        return _family_classes()[family].from_pretrained(Path(path), export=export, **kwargs)


def family_of(model_id: str | os.PathLike, hub_kwargs: dict) -> tuple[Path, str | None]:
    """The local path of a checkpoint or artifact and its model family (``decoder``, ``vlm``; None if unknown)."""
    path = resolve_checkpoint(model_id, hub_kwargs)
    if (path / NPU_CONFIG_FILE).is_file():
        origin = str(path / NPU_CONFIG_FILE)
        stored = expect_dict(load_json(path / NPU_CONFIG_FILE, what=origin, error=ArtifactError), origin,
                             ArtifactError)
        family = stored.get("family", "decoder")
        if family not in FAMILIES:
            raise ArtifactError(f"{origin}: family={str(family)[:80]!r} is not one of {list(FAMILIES)}; the "
                                "artifact was modified or was not written by optimum-npu: re-download it or "
                                "recompile the model")
        return path, family
    architecture = next((a for a in AutoConfig.from_pretrained(path).architectures or [] if a in REGISTRY), None)
    return path, REGISTRY[architecture].family if architecture else None


class NPUAutoModelForCausalLM(NPUAutoModel):
    """Text-generation models (decoder-only LMs)."""

    families = ("decoder",)


class NPUAutoModelForImageTextToText(NPUAutoModel):
    """Vision-language models (Qwen2-VL, Qwen2.5-VL)."""

    families = ("vlm",)
