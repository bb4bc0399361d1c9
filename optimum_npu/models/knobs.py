"""Checks every family's ``npu_config`` shares: the value a user passes (object, dict or None) and the runtime
options ``device`` / ``profile`` of a single-device runtime."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.models.decoder.stored_config import short_repr

Config = TypeVar("Config")


def coerce_knobs(cls: type[Config], value: Any, family: str, example: str, hint: str = "") -> Config:
    """A ``cls`` config from itself, a dict of its fields or None (defaults); anything else, or a dict naming a
    field ``cls`` does not have, is an error naming the value and the knobs (``example``: a dict shown in the
    error; ``hint``: said after the knob list)."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise NPUConfigError(f"npu_config={short_repr(value)} is invalid: pass an {cls.__name__} or a dict such as "
                             f"{example}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise NPUConfigError(f"npu_config has unknown {family} knobs {short_repr(unknown)}; the knobs are "
                             f"{sorted(known)}{hint}")
    return cls(**value)


def refuse_changed_knobs(where: str, changed: list[str], allowed: str) -> None:
    """Raises when a load-time ``npu_config`` (named ``where``) changes compile knobs (``changed``, sorted);
    ``allowed``: the runtime options that may change, as the message lists them."""
    if changed:
        raise NPUConfigError(f"{where} {changed} differ from the compiled artifact's knobs; compile knobs cannot "
                             f"change at load time (only {allowed} can): recompile with "
                             "from_pretrained(checkpoint, export=True, npu_config=...)")


def check_device_and_profile(device: Any, profile: Any) -> None:
    """``device``: one device id >= 0; ``profile``: a bool."""
    if not isinstance(device, int) or isinstance(device, bool) or device < 0:
        raise NPUConfigError(f"device={short_repr(device)} is invalid: give a device id >= 0")
    if not isinstance(profile, bool):
        raise NPUConfigError(f"profile={short_repr(profile)} is invalid: use True or False")


# seq2seq tensor parallelism: a runtime ``device`` per rank
def check_rank_devices(device: Any, size: int, profile: Any) -> None:
    """``device``: the id of rank 0 (rank r on ``device + r``) or a tuple of one distinct id per rank (each >= 0);
    ``profile``: a bool."""
    ids = device if isinstance(device, tuple) else (device,)
    if not ids or any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in ids):
        raise NPUConfigError(f"device={short_repr(device)} is invalid: give a device id >= 0 or a list of "
                             f"{size} distinct ids, one per tensor-parallel rank")
    if isinstance(device, tuple) and (len(set(ids)) != len(ids) or len(ids) != size):
        raise NPUConfigError(f"device={list(device)} must list {size} distinct ids for tensor_parallel_size={size} "
                             "(one per rank)")
    check_device_and_profile(ids[0], profile)
