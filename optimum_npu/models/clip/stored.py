"""Reading a CLIP artifact's top-level ``npu_config.json`` and logit scale (untrusted data) before the towers load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from optimum_npu.compile.artifact import ArtifactError, require_listed
from optimum_npu.compile.weights import load_weights
from optimum_npu.models.clip.export import LOGIT_SCALE_FILE, SUBMODULE_DIRS
from optimum_npu.models.clip.npu_config import SHARED_KNOBS, NPUCLIPConfig
from optimum_npu.models.decoder.artifact_files import check_stored_architecture, read_hf_config
from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.models.decoder.stored_config import STORED_FIX, short_repr, stored_knob_error
from optimum_npu.models.encoder.stored import runtime_options
from optimum_npu.schema import NPU_CONFIG_FILE
from optimum_npu.untrusted import expect_dict


@dataclass(frozen=True)
class StoredCLIP:
    """What a verified CLIP artifact's top level holds, every field checked."""

    config: NPUCLIPConfig
    hf_config: Any
    logit_scale: torch.Tensor


def read_stored(root: Path, stored: Any, requested: Any) -> StoredCLIP:
    """Checks the stored knobs like user input and the submodule folders; ``requested``: the caller's runtime
    options (a differing compile knob is refused)."""
    origin = str(Path(root) / NPU_CONFIG_FILE)
    stored = expect_dict(stored, origin, NPUConfigError)
    hf_config = read_hf_config(root)
    check_stored_architecture(stored, hf_config, "clip", origin)
    if stored.get("submodules") != SUBMODULE_DIRS:
        raise stored_knob_error(origin, f"submodules={short_repr(stored.get('submodules'))} must be {SUBMODULE_DIRS}")
    knobs = {key: stored.get(key) for key in ("text", "vision", *SHARED_KNOBS)}
    try:
        config = NPUCLIPConfig.coerce(knobs)
    except (NPUConfigError, TypeError) as err:
        raise stored_knob_error(origin, short_repr(str(err), 300)) from None
    options = runtime_options(config.to_dict(), requested, NPUCLIPConfig)
    config = NPUCLIPConfig.coerce({**knobs, **options})
    weights = load_weights(require_listed(Path(root), LOGIT_SCALE_FILE))
    scale = weights.get("logit_scale")
    if set(weights) != {"logit_scale"} or scale.dim() != 0 or not scale.is_floating_point() \
            or not bool(torch.isfinite(scale)):
        raise ArtifactError(f"{root}/{LOGIT_SCALE_FILE} must hold one finite scalar 'logit_scale'; {STORED_FIX}")
    return StoredCLIP(config, hf_config, scale.float())

