"""Reading one compiled component folder (untrusted data) into validated facts.

A component folder, alone or inside a pipeline, stores its family, HF class, its own config, the inputs of
each graph kind and its graphs. The family and HF class are looked up in closed tables; the config is parsed
by the family's config class like user input; every graph must be one of the buckets that config compiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimum_npu.compile.artifact import ArtifactError, read_graph, require_listed
from optimum_npu.device.spec import NPUSpec
from optimum_npu.models.decoder.artifact_files import stored_spec
from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.models.decoder.stored_config import short_repr, stored_knob_error
from optimum_npu.models.diffusion.component_config import (VAE_PARTS, ComponentConfig, NPUDenoiserConfig,
                                                           NPUTextEncoderConfig, NPUVAEConfig)
from optimum_npu.models.diffusion.components import CLASSES, INPUTS
from optimum_npu.schema import NPU_CONFIG_FILE, Graph
from optimum_npu.untrusted import expect_dict, load_json

#: The config class of each component family (closed table of the names an artifact may store).
COMPONENT_CONFIGS: dict[str, type[ComponentConfig]] = {
    "diffusion_text_encoder": NPUTextEncoderConfig, "diffusion_unet": NPUDenoiserConfig,
    "diffusion_transformer": NPUDenoiserConfig, "diffusion_vae": NPUVAEConfig}
#: Knobs an artifact must store resolved (never None) when its config has them.
RESOLVED = ("resolutions", "max_length", "vae_scale_factor", "text_tokens")
#: Most graphs one component folder may list.
MAX_GRAPHS = 4 * 16 * 2


def graph_kinds(family: str, config: ComponentConfig) -> tuple[str, ...]:
    """The graph kinds a component of ``family`` compiled with ``config`` holds."""
    if isinstance(config, NPUVAEConfig):
        return tuple(VAE_PARTS[part] for part in config.parts)
    return (family.removeprefix("diffusion_"),)


@dataclass(frozen=True)
class StoredComponent:
    """What a verified component folder holds, every field checked."""

    folder: str
    family: str
    kinds: tuple[str, ...]
    class_name: str
    config: ComponentConfig
    spec: NPUSpec
    hf_config: dict
    graphs: dict[str, Graph]
    tensor_parallel_size: int


def read_component(root: Path, family: str | None = None, requested: Any = None,
                   where_knobs: str = "npu_config") -> StoredComponent:
    """Checks the component folder ``root`` (its manifest already verified or covered by a pipeline's).

    Args:
        root: the folder.
        family: the family it must be (a pipeline's folder); None: any component family.
        requested: runtime options at load time (``device``, ``profile``); compile knobs may not differ.
        where_knobs: how errors about ``requested`` name it.
    """
    root = Path(root)
    where = f"{root}/{NPU_CONFIG_FILE}"
    document = expect_dict(load_json(require_listed(root, NPU_CONFIG_FILE), error=ArtifactError), where,
                           ArtifactError)
    stored_family = document.get("family")
    allowed = [family] if family else sorted(COMPONENT_CONFIGS)
    if stored_family not in allowed:
        hint = " (a compiled pipeline: load one of its component folders, e.g. its 'unet' folder)" \
            if stored_family == "diffusion" else ""
        raise stored_knob_error(where, f"family={short_repr(stored_family)} must be one of {allowed}{hint}")
    config_class = COMPONENT_CONFIGS[stored_family]
    knobs = list(config_class().to_dict())
    try:
        config = config_class.coerce({k: document.get(k) for k in knobs})
    except (NPUConfigError, TypeError) as err:
        raise stored_knob_error(where, short_repr(str(err), 300)) from None
    unresolved = [k for k in RESOLVED if k in knobs and getattr(config, k) is None]
    if unresolved:
        raise stored_knob_error(where, f"{unresolved} must be stored")
    kinds = graph_kinds(stored_family, config)
    class_name = document.get("class_name")
    if class_name not in CLASSES[kinds[0]]:
        raise stored_knob_error(where, f"class_name={short_repr(class_name)} must be one of {list(CLASSES[kinds[0]])}")
    inputs = document.get("inputs")
    if not isinstance(inputs, dict) or sorted(inputs) != sorted(kinds) or any(
            inputs[kind] not in _allowed_inputs(kind) for kind in kinds):
        raise stored_knob_error(where, f"inputs={short_repr(inputs)} must map {list(kinds)} to one of their input "
                                       f"lists {[_allowed_inputs(kind) for kind in kinds]}")
    names = document.get("graphs")
    if not isinstance(names, list) or not names or len(names) > MAX_GRAPHS:
        raise stored_knob_error(where, "graphs must be a non-empty list of graph names")
    size = document.get("tensor_parallel_size")
    if size != config.ranks:
        raise stored_knob_error(where, f"tensor_parallel_size={short_repr(size)} must be {config.ranks}")
    graphs = {name: read_graph(root, name) for name in names}
    for graph in graphs.values():
        _check_bucket(graph, inputs, config, where)
    hf_config = expect_dict(load_json(require_listed(root, "config.json"), error=ArtifactError),
                            f"{root}/config.json", ArtifactError)
    return StoredComponent(root.name, stored_family, kinds, class_name,
                           config.with_runtime(requested, where_knobs), stored_spec(document, where), hf_config,
                           graphs, size)


def _allowed_inputs(kind: str) -> list[list[str]]:
    return [list(INPUTS[kind])] + ([list(INPUTS["unet_sdxl"])] if kind == "unet" else [])


def _check_bucket(graph: Graph, inputs: dict[str, list[str]], config: ComponentConfig, where: str) -> None:
    attrs, rows = graph.attributes, sorted(config.graph_rows())
    kind = attrs.get("kind")
    specs = graph.inputs_of_kind("input")
    resolutions = [list(r) for r in getattr(config, "resolutions", None) or ()]
    fine = (kind in inputs and attrs.get("batch") in rows and [s.name for s in specs] == inputs[kind]
            and all(s.shape[0] == attrs.get("batch") for s in specs)
            and (list(specs[0].shape[1:]) == [config.max_length] if isinstance(config, NPUTextEncoderConfig)
                 else [attrs.get("height"), attrs.get("width")] in resolutions))
    if not fine:
        raise stored_knob_error(where, f"graph {graph.name!r} does not match the stored buckets (kinds "
                                       f"{sorted(inputs)}, batch in {rows}, resolutions {resolutions})")
