"""Canonical forms the compile-cache key hashes and the cache-hit check compares (shared by both)."""

from __future__ import annotations

import json
from typing import Any

_EXCLUDED_CONFIG_KEYS = ("transformers_version",)


def _public_dict(config: Any) -> dict[str, Any] | None:
    if config is None:
        return None
    data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return {k: v for k, v in data.items() if not k.startswith("_") and k not in _EXCLUDED_CONFIG_KEYS}


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace; non-JSON values (dtypes, paths) as their ``str``."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
