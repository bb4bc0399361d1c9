"""Reading an artifact's files besides the knobs: untrusted data, bounded and checked before use.

``config.json`` (layer counts bounded before Transformers parses it), ``generation_config.json``, the stored
architecture and family (registry keys only), the decoder's model facts and the stored NPU spec. Shared by
every family's loader (decoder, vision-language, encoder).
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig, GenerationConfig

from optimum_npu.compile.artifact import ArtifactError
from optimum_npu.device.spec import NPUSpec
from optimum_npu.models.decoder.stored_config import (MAX_LAYERS, STORED_FIX, check_model_config, short_repr,
                                                      stored_knob_error)
from optimum_npu.models.model_config import DecoderModelConfig
from optimum_npu.models.registry import REGISTRY, Architecture, lookup_architecture
from optimum_npu.untrusted import expect_dict, load_json


def read_hf_config(root: Path):
    """config.json of an artifact, bounded (size, nesting, layer count) before Transformers parses it."""
    path = Path(root) / "config.json"
    raw = expect_dict(load_json(path, what=str(path), error=ArtifactError), str(path), ArtifactError)
    _check_layer_counts(raw, str(path))
    try:
        return AutoConfig.from_pretrained(root)
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as err:
        raise ArtifactError(f"{path} cannot be read as a Transformers config ({short_repr(str(err), 200)}); "
                            f"{STORED_FIX}") from None


def _check_layer_counts(raw: dict, origin: str, depth: int = 0) -> None:
    """Layer counts are bounded before Transformers builds per-layer lists from them."""
    for key, value in raw.items():
        if key in ("num_hidden_layers", "depth") and (not isinstance(value, int) or isinstance(value, bool)
                                                      or not 1 <= value <= MAX_LAYERS):
            raise ArtifactError(f"{origin} is invalid: {key}={short_repr(value)} must be an integer in "
                                f"[1, {MAX_LAYERS}]; {STORED_FIX}")
        if key == "layer_types" and isinstance(value, list) and len(value) > MAX_LAYERS:
            raise ArtifactError(f"{origin} is invalid: layer_types lists {len(value)} layers, more than "
                                f"{MAX_LAYERS}; {STORED_FIX}")
        if isinstance(value, dict) and depth < 2:
            _check_layer_counts(value, origin, depth + 1)


def read_generation_config(root: Path) -> GenerationConfig | None:
    """generation_config.json if the artifact has one (bounded like every JSON file of an artifact)."""
    path = Path(root) / "generation_config.json"
    if not path.is_file():
        return None
    expect_dict(load_json(path, what=str(path), error=ArtifactError), str(path), ArtifactError)
    try:
        return GenerationConfig.from_pretrained(root)
    except OSError:
        return None
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise ArtifactError(f"{path} is not a valid generation config ({short_repr(str(err), 200)}); "
                            f"{STORED_FIX}") from None


def check_stored_architecture(stored: dict, hf_config, family: str, origin: str) -> Architecture:
    """The stored ``architecture`` / ``family`` are registry keys (never used otherwise) and agree with config.json."""
    name, stored_family = stored.get("architecture"), stored.get("family")
    if not isinstance(name, str) or name not in REGISTRY or REGISTRY[name].family != family:
        raise stored_knob_error(origin, f"architecture={short_repr(name)} is not a supported {family} "
                                        f"architecture ({sorted(n for n, a in REGISTRY.items() if a.family == family)})")
    if stored_family != family:
        raise stored_knob_error(origin, f"family={short_repr(stored_family)} must be {family!r} for {name}")
    try:
        arch = lookup_architecture(hf_config, family)
    except ValueError as err:
        raise ArtifactError(f"{origin}: config.json: {err}; {STORED_FIX}") from None
    if arch.name != name:
        raise stored_knob_error(origin, f"architecture={name!r} differs from config.json's {arch.name!r}")
    return arch


def stored_model_config(hf_config, root: Path) -> DecoderModelConfig:
    """The normalised model facts of an artifact's config.json, checked before anything is sized from them."""
    origin = str(Path(root) / "config.json")
    try:
        model = DecoderModelConfig.from_hf(hf_config)
    except (AttributeError, TypeError, ValueError, ZeroDivisionError) as err:
        raise ArtifactError(f"{origin} lacks what a decoder needs ({short_repr(str(err), 200)}); "
                            f"{STORED_FIX}") from None
    check_model_config(model, origin)
    return model


def stored_spec(stored: dict, origin: str) -> NPUSpec:
    """The target spec stored in the artifact (``npu_spec``); the ``npu`` label is never resolved as a path here."""
    try:
        return NPUSpec.from_dict(stored.get("npu_spec"), origin=f"npu_spec in {origin}")
    except ValueError as err:
        raise stored_knob_error(origin, str(err)) from None
