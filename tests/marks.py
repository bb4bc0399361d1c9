"""Test-suite tiers: the first case of a parametrized test stays in the quick tier (``-m "not slow"``), the
others run with the whole suite (CI runs everything)."""

from __future__ import annotations

from typing import Any, Iterable

import pytest


def first_fast(values: Iterable[Any], ids: Iterable[str] | None = None) -> list:
    """``values`` as ``pytest.param``s, every one but the first marked ``slow``."""
    values = list(values)
    ids = list(ids) if ids is not None else [None] * len(values)
    return [pytest.param(*(v if isinstance(v, tuple) else (v,)), id=i, marks=() if n == 0 else pytest.mark.slow)
            for n, (v, i) in enumerate(zip(values, ids))]
