"""The registry entries of the Diffusers components (see ``models/family.py``): one per component kind.

Each entry's class compiles, saves and loads one component alone (``component_models.py``) with its own
config class (``component_config.py``); a compiled pipeline's component folders store these family names,
so ``NPUAutoModel.from_pretrained("<pipeline>/unet")`` loads the UNet alone. A Diffusers component folder
(``config.json`` with a ``_class_name`` of the entry's classes) is recognised for ``optimum-npu export``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from optimum_npu.models.diffusion.component_models import (NPUAutoencoderKL, NPUComponentModel,
                                                           NPUDiffusionTextEncoder, NPUSD3Transformer2DModel,
                                                           NPUUNet2DConditionModel)
from optimum_npu.models.diffusion.export import compile_component
from optimum_npu.models.diffusion.cache_key import component_cache_key
from optimum_npu.models.diffusion.npu_config import diffusers_export_config
from optimum_npu.models.diffusion.stored_component import COMPONENT_CONFIGS
from optimum_npu.models.family import Family, graph_summary
from optimum_npu.untrusted import load_json


def _placement(device: int, profile: bool = False, prefix_caching: bool = False) -> dict[str, Any]:
    if prefix_caching:
        raise ValueError("--enable-prefix-caching applies to text generation, not to Diffusers components")
    return {"device": device, "profile": profile}


def _plan_config(hf_config: Any) -> Any:
    raise ValueError("planner.plan sizes language models; a Diffusers component is planned with its pipeline: "
                     "`optimum-npu plan <pipeline folder>`")


def _recognizes(classes: tuple[str, ...]):
    """A Diffusers component folder of one of ``classes`` (its ``config.json`` ``_class_name``)."""
    def recognizes(path: Path) -> bool:
        try:
            document = load_json(Path(path) / "config.json", error=ValueError)
        except (OSError, ValueError):
            return False
        return isinstance(document, dict) and document.get("_class_name") in classes
    return recognizes


def _entry(model_class: type[NPUComponentModel], flat: tuple[str, ...], recognizes: bool) -> Family:
    return Family(
        name=model_class.family_name,
        model_class=model_class,
        config_class=COMPONENT_CONFIGS[model_class.family_name],
        graph_builder=compile_component,
        cache_key=component_cache_key,
        export_config=diffusers_export_config("component", flat),
        placement=_placement,
        plan_config=_plan_config,
        summary=lambda model: graph_summary(list(model.npu_graphs)),
        recognizes=_recognizes(model_class.hf_classes) if recognizes else None,
    )


DIFFUSION_UNET = _entry(NPUUNet2DConditionModel, ("dtype", "npu", "batch_size", "tensor_parallel_size"), True)
DIFFUSION_TRANSFORMER = _entry(NPUSD3Transformer2DModel, ("dtype", "npu", "batch_size", "tensor_parallel_size"), True)
DIFFUSION_VAE = _entry(NPUAutoencoderKL, ("dtype", "npu", "batch_size"), True)
#: Text encoders are Transformers checkpoints (found by ``architectures``; the encoder family owns CLIP with
#: projection for embeddings), so this entry is reached through artifacts and its classes, not recognised.
DIFFUSION_TEXT_ENCODER = _entry(NPUDiffusionTextEncoder, ("dtype", "npu", "batch_size"), False)
COMPONENT_FAMILIES = (DIFFUSION_UNET, DIFFUSION_TRANSFORMER, DIFFUSION_VAE, DIFFUSION_TEXT_ENCODER)
