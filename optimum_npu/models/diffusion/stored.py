"""Reading a compiled pipeline (untrusted data) into validated facts, then its components onto their devices.

Every stored knob is checked like user input; the component folders must be exactly those of the stored
pipeline kind; each folder is read as its component family's artifact (``stored_component.py``: family,
HF class, inputs and graph buckets checked against its own config) and its config must be the pipeline's; HF
class, scheduler and tokenizer names are looked up in closed tables (never resolved from file strings);
every tokenizer file is listed in the manifest before the tokenizer reads its folder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimum_npu.compile.artifact import ArtifactError, read_manifest, require_listed
from optimum_npu.device.spec import NPUSpec
from optimum_npu.models.decoder.artifact_files import stored_spec
from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.models.decoder.stored_config import STORED_FIX, short_repr, stored_knob_error
from optimum_npu.models.diffusion.components import KIND_FAMILY
from optimum_npu.models.diffusion.export import PIPELINE_OPTIONS, TOKENIZERS
from optimum_npu.models.diffusion.npu_config import NPUDiffusionConfig
from optimum_npu.models.diffusion.stored_component import StoredComponent, read_component
from optimum_npu.models.knobs import refuse_changed_knobs
from optimum_npu.schema import NPU_CONFIG_FILE
from optimum_npu.untrusted import expect_dict, load_json

#: Component folders of each pipeline kind (the VAE encoder is optional: compiled for img2img/inpaint).
PIPELINE_COMPONENTS = {
    "StableDiffusionPipeline": ("text_encoder", "unet", "vae_decoder"),
    "StableDiffusionXLPipeline": ("text_encoder", "text_encoder_2", "unet", "vae_decoder"),
    "StableDiffusion3Pipeline": ("text_encoder", "text_encoder_2", "text_encoder_3", "transformer", "vae_decoder"),
}
OPTIONAL = ("vae_encoder",)


@dataclass(frozen=True)
class StoredPipeline:
    """What a verified pipeline artifact holds, every field checked."""

    kind: str
    config: NPUDiffusionConfig
    spec: NPUSpec
    components: dict[str, StoredComponent]
    tokenizers: tuple[str, ...]
    scheduler: dict
    options: dict


def read_stored(root: Path, stored: Any, requested: Any) -> StoredPipeline:
    """Checks the root document, then every component folder; ``requested``: runtime options at load time."""
    root = Path(root)
    origin = str(root / NPU_CONFIG_FILE)
    stored = expect_dict(stored, origin, NPUConfigError)
    kind = stored.get("pipeline")
    if stored.get("family") != "diffusion" or kind not in PIPELINE_COMPONENTS:
        raise stored_knob_error(origin, f"pipeline={short_repr(kind)} must be one of {sorted(PIPELINE_COMPONENTS)}")
    try:
        config = NPUDiffusionConfig.coerce({key: stored.get(key) for key in NPUDiffusionConfig().to_dict()})
    except (NPUConfigError, TypeError) as err:
        raise stored_knob_error(origin, short_repr(str(err), 300)) from None
    if config.resolutions is None:
        raise stored_knob_error(origin, "resolutions must be stored")
    config = dataclasses.replace(config, **_runtime_options(config, requested))
    expected = PIPELINE_COMPONENTS[kind]
    folders = stored.get("components")
    if not isinstance(folders, dict) or not set(expected) <= set(folders) <= set(expected + OPTIONAL) \
            or stored.get("submodules") != {f: f for f in folders}:
        raise stored_knob_error(origin, f"components={short_repr(folders)} must be {list(expected)} (and optionally "
                                        f"{list(OPTIONAL)}), each in the folder of its name")
    listed = read_manifest(root)
    components = {folder: _component(root, folder, config, listed) for folder in folders}
    tokenizers = stored.get("tokenizers")
    allowed = tuple(TOKENIZERS[:sum(1 for f in folders if f.startswith("text_encoder"))])
    if tokenizers != list(allowed):
        raise stored_knob_error(origin, f"tokenizers={short_repr(tokenizers)} must be {list(allowed)}")
    for name in allowed:
        _check_folder_listed(root, name, listed)
    index = expect_dict(load_json(require_listed(root, "config.json", listed), error=ArtifactError),
                        f"{root}/config.json", ArtifactError)
    options = index.get("options", {})
    if not isinstance(options, dict) or any(k not in PIPELINE_OPTIONS or not isinstance(v, bool)
                                            for k, v in options.items()):
        raise stored_knob_error(f"{root}/config.json", f"options={short_repr(options)} must map "
                                                       f"{list(PIPELINE_OPTIONS)} to booleans")
    scheduler = expect_dict(load_json(require_listed(root, "scheduler/scheduler_config.json", listed),
                                      error=ArtifactError), f"{root}/scheduler", ArtifactError)
    return StoredPipeline(kind, config, stored_spec(stored, origin), components, allowed, scheduler, options)


def _component(root: Path, folder: str, config: NPUDiffusionConfig, listed: dict) -> StoredComponent:
    """A component folder of the pipeline: of the family of its name, compiled with the pipeline's knobs; every
    file its own manifest lists is listed, with the same digest, in the pipeline's (verified) manifest."""
    own = read_manifest(root / folder)
    unverified = sorted(rel for rel, entry in own.items() if listed.get(f"{folder}/{rel}") != entry)
    if unverified:
        raise ArtifactError(f"{root}/{folder}: {short_repr(unverified)} listed in its manifest are not the files the "
                            f"pipeline's manifest lists; {STORED_FIX}")
    kind = "text_encoder" if folder.startswith("text_encoder") else folder
    stored = read_component(root / folder, KIND_FAMILY[kind])
    expected = config.component_config(folder)
    shared = {k: v for k, v in expected.to_dict().items() if k not in expected.derived_knobs}
    found = {k: stored.config.to_dict()[k] for k in shared}
    if found != shared:
        raise stored_knob_error(f"{root}/{folder}/{NPU_CONFIG_FILE}", f"the component's knobs {short_repr(found, 300)} "
                                f"must be the pipeline's {short_repr(shared, 300)}")
    return stored


def _check_folder_listed(root: Path, name: str, listed: dict) -> None:
    """Every file of a tokenizer folder is in the manifest (the tokenizer reads its whole folder)."""
    folder = root / name
    files = sorted(p.relative_to(root).as_posix() for p in folder.rglob("*")) if folder.is_dir() else []
    unlisted = [f for f in files if f not in listed]
    if not files or unlisted:
        raise ArtifactError(f"{folder}: the tokenizer folder is missing or holds files the manifest does not list "
                            f"({short_repr(unlisted)}); {STORED_FIX}")


def _runtime_options(config: NPUDiffusionConfig, requested: Any) -> dict[str, Any]:
    """The runtime options (``devices``, ``profile``) of ``requested``; a differing compile knob is an error."""
    if requested is None:
        return {}
    if isinstance(requested, NPUDiffusionConfig):
        requested = {**requested.to_dict(), **requested.runtime()}
    asked = NPUDiffusionConfig.coerce(requested)   # refuses what is not a config
    given = set(requested) | {k for entry in requested.values() if isinstance(entry, dict) for k in entry}
    stored, wanted = config.to_dict(), asked.to_dict()
    refuse_changed_knobs("npu_config", sorted(k for k in stored if k in given and wanted[k] != stored[k]),
                         "each component's 'device' and 'profile'")
    return asked.runtime()
