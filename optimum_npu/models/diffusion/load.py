"""Put a verified pipeline artifact's components on their devices: one ``DeviceEngine`` per component folder.

Each folder becomes its public component class (``component_models.build_component``); classes are taken from
closed tables keyed by the (already checked) stored class names; the profiler, when
on, is shared, so every component lands on its own device's track of one trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
from transformers import CLIPTokenizer, PreTrainedTokenizerFast

from optimum_npu.device.device import DeviceRegistry
from optimum_npu.device.profiler import Profiler
from optimum_npu.models.diffusion.component_models import NPUAutoencoderKL, build_component
from optimum_npu.models.diffusion.modules import NPUComponent
from optimum_npu.models.diffusion.stats import DiffusionStats
from optimum_npu.models.diffusion.stored import StoredPipeline

TOKENIZER_CLASSES = {"tokenizer": CLIPTokenizer, "tokenizer_2": CLIPTokenizer, "tokenizer_3": PreTrainedTokenizerFast}
#: Schedulers an artifact may name (host-side, built from their stored config).
SCHEDULERS = {name: getattr(diffusers, name) for name in (
    "DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "LMSDiscreteScheduler", "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler",
    "FlowMatchEulerDiscreteScheduler")}


@dataclass
class LoadedPipeline:
    """The modules a Diffusers pipeline constructor takes, and what the NPU side keeps."""

    modules: dict[str, Any]
    stats: DiffusionStats
    profiler: Profiler | None
    components: list[NPUComponent]


def load_pipeline(root: Path, facts: StoredPipeline, registry: DeviceRegistry | None) -> LoadedPipeline:
    config = facts.config
    profiler = Profiler() if config.profile else None
    stats = DiffusionStats()
    built: dict[str, NPUComponent] = {}
    try:
        for folder, stored in facts.components.items():
            entry = "vae" if folder.startswith("vae") else folder
            devices = config.component_config(folder).device_ids(f"devices[{entry!r}]")
            built[folder] = build_component(Path(root) / folder, stored, facts.spec, devices, folder, stats,
                                            registry, profiler, owner=f"{facts.kind}:{folder}")
    except BaseException:
        for component in built.values():
            component.release()
        raise
    modules: dict[str, Any] = {name: part for name, part in built.items() if not name.startswith("vae")}
    modules["vae"] = NPUAutoencoderKL._assemble(built["vae_decoder"], facts.components["vae_decoder"].hf_config,
                                                encoder=built.get("vae_encoder"))
    for name in facts.tokenizers:
        modules[name] = TOKENIZER_CLASSES[name].from_pretrained(Path(root) / name)
    scheduler_class = SCHEDULERS.get(facts.scheduler.get("_class_name"))
    if scheduler_class is None:
        raise ValueError(f"{root}/scheduler: scheduler {str(facts.scheduler.get('_class_name'))[:80]!r} is not one of "
                         f"{sorted(SCHEDULERS)}; re-download or recompile the pipeline")
    modules["scheduler"] = scheduler_class.from_config(facts.scheduler)
    return LoadedPipeline(modules, stats, profiler, list(built.values()))
