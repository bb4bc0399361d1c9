"""A pipeline compiled around components compiled alone.

``NPUStableDiffusionPipeline.from_pretrained(folder, export=True, unet=npu_unet)`` hands the compiled
component to Diffusers' own ``from_pretrained`` (which then does not load that module), so the eager pipeline
holds it; ``from_pipeline`` finds every compiled component in the pipeline and copies its folder (the files
its manifest lists) into the artifact instead of compiling it. Before anything is compiled, each one's
compile knobs must equal what the pipeline compiles for that folder (``plan.folder_configs``); a compiled
denoiser's bucket knobs are the pipeline's defaults (``npu_config`` may repeat them, not change them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.models.decoder.stored_config import short_repr
from optimum_npu.models.diffusion.component_config import ComponentConfig
from optimum_npu.models.diffusion.component_models import NPUAutoencoderKL, NPUComponentModel
from optimum_npu.models.diffusion.npu_config import BUCKET_KNOBS, COMPONENT_NAMES, DENOISERS, NPUDiffusionConfig


def compiled_components(pipe: Any) -> dict[str, NPUComponentModel]:
    """The pipeline's modules that are compiled components, by pipeline attribute."""
    return {name: getattr(pipe, name) for name in COMPONENT_NAMES
            if isinstance(getattr(pipe, name, None), NPUComponentModel)}


def with_denoiser_knobs(npu_config: Any, components: dict[str, NPUComponentModel]) -> Any:
    """``npu_config`` with a compiled denoiser's bucket knobs (and target) as defaults."""
    name = next((n for n in DENOISERS if n in components), None)
    if name is None:
        return npu_config
    if isinstance(npu_config, NPUDiffusionConfig) or (npu_config is not None and not isinstance(npu_config, dict)):
        return npu_config   # an explicit config object: checked against the component like any other
    stored = components[name].npu_config.to_dict()
    given = dict(npu_config or {})
    entry = {**{k: stored[k] for k in BUCKET_KNOBS if k not in given}, **given.get(name, {})}
    return {**{k: stored[k] for k in ("dtype", "npu") if k not in given}, **given, name: entry}


def precompiled_folders(components: dict[str, NPUComponentModel]) -> dict[str, NPUComponentModel]:
    """The artifact folder each compiled component fills (a VAE: the folder of its one compiled half)."""
    folders = {}
    for name, component in components.items():
        if isinstance(component, NPUAutoencoderKL):
            parts = component.npu_config.parts
            if len(parts) != 1:
                raise NPUConfigError(f"the compiled VAE holds {list(parts)}; a pipeline keeps each half in its own "
                                     "folder: compile the VAE with parts=['decoder'] (and another with "
                                     "parts=['encoder'] for image-to-image), or let the pipeline compile it")
            folders[f"vae_{parts[0]}"] = component
        else:
            folders[name] = component
    return folders


def check_precompiled(folders: dict[str, NPUComponentModel], expected: dict[str, ComponentConfig]) -> dict[str, Path]:
    """Each compiled component's folder, after its compile knobs are checked against the pipeline's."""
    result = {}
    for folder, component in folders.items():
        if folder not in expected:
            raise NPUConfigError(f"a compiled {folder} was given, but this pipeline has no {folder} folder "
                                 f"(its folders: {sorted(expected)})")
        found, wanted = component.npu_config.to_dict(), expected[folder].to_dict()
        differ = {k: (found.get(k), v) for k, v in wanted.items() if found.get(k) != v}
        if differ:
            raise NPUConfigError(f"the compiled {folder} does not fit this pipeline: its knobs "
                                 f"{short_repr({k: f for k, (f, _) in differ.items()}, 300)} must be "
                                 f"{short_repr({k: w for k, (_, w) in differ.items()}, 300)}; recompile it with "
                                 "those, or pass the pipeline's npu_config for it")
        result[folder] = component.artifact_dir
    return result
