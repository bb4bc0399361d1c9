"""The family registry: every model family optimum-npu compiles, by the name its artifacts store.

Adding a family is a folder under ``models/`` with a ``family.py`` entry, plus one line here.
"""

from __future__ import annotations

from typing import Any

from optimum_npu.models.clip.family import CLIP
from optimum_npu.models.decoder.family import DECODER
from optimum_npu.models.diffusion.component_family import COMPONENT_FAMILIES
from optimum_npu.models.diffusion.family import DIFFUSION
from optimum_npu.models.encoder.family import ENCODER
from optimum_npu.models.family import Family
from optimum_npu.models.registry import REGISTRY
from optimum_npu.models.seq2seq.family import SEQ2SEQ
from optimum_npu.models.vlm.family import VLM

FAMILIES: dict[str, Family] = {family.name: family for family in (DECODER, VLM, ENCODER, CLIP, DIFFUSION, SEQ2SEQ)}
# ---- Diffusers components (models/diffusion/component_family.py): each compiled, saved and loaded alone -------
FAMILIES.update({family.name: family for family in COMPONENT_FAMILIES})


def family_named(name: object, origin: str = "npu_config.json") -> Family:
    """The registry entry of ``name`` (a string read from an artifact: untrusted), or a ValueError."""
    if not isinstance(name, str) or name not in FAMILIES:
        raise ValueError(f"{origin}: family={str(name)[:80]!r} is not one of {sorted(FAMILIES)}; the artifact was "
                         "modified or was not written by optimum-npu: re-download it or recompile the model")
    return FAMILIES[name]


def family_of_config(hf_config: Any) -> Family | None:
    """The family that compiles an HF config's architecture (None when no family supports it)."""
    name = next((a for a in getattr(hf_config, "architectures", None) or [] if a in REGISTRY), None)
    return FAMILIES[REGISTRY[name].family] if name else None
