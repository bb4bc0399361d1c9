"""Reading attacker-controlled JSON documents (artifact files, cache entries) with bounds.

Every JSON file inside an artifact, a Hub repository or a compile-cache entry is untrusted.
``load_json`` checks its size on disk and its nesting depth *before* building any Python
object, so a huge or deeply nested document is refused with a clear error instead of
exhausting memory or raising a raw ``RecursionError``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

#: Default limits: generous for what the compiler writes, small enough to refuse abuse.
MAX_DOCUMENT_BYTES = 4 << 20  # npu_config.json, manifests, cache entries
MAX_GRAPH_BYTES = 256 << 20  # graph files of very large models (an 80-layer graph is tens of MiB)
MAX_DEPTH = 32

_OPEN = np.frombuffer(b"[{", dtype=np.uint8)
_CLOSE = np.frombuffer(b"]}", dtype=np.uint8)


class UntrustedDocumentError(ValueError):
    """A JSON document from an artifact or cache is too large, too deep or malformed."""


def nesting_depth(data: bytes) -> int:
    """Deepest ``[``/``{`` nesting of a JSON text, brackets inside strings not counted (no parsing)."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size == 0:
        return 0
    quote = raw == ord('"')
    # a quote escaped by an odd run of backslashes does not toggle the string state
    backslash = raw == ord("\\")
    if backslash.any():
        edges = np.diff(np.concatenate(([0], backslash.astype(np.int8), [0])))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # runs [start, end)
        escaped = ends[((ends - starts) % 2 == 1) & (ends < raw.size)]  # an odd run escapes the next byte
        quote[escaped] = False
    in_string = (np.cumsum(quote) % 2).astype(bool) | quote
    step = np.isin(raw, _OPEN).astype(np.int64) - np.isin(raw, _CLOSE).astype(np.int64)
    step[in_string] = 0
    return int(np.cumsum(step).max(initial=0))


def parse_json(data: bytes | str, *, what: str, max_bytes: int = MAX_DOCUMENT_BYTES, max_depth: int = MAX_DEPTH,
               error: type[ValueError] = UntrustedDocumentError) -> Any:
    """Parses ``data`` after checking its size and nesting depth; ``what`` names it in errors."""
    if isinstance(data, str):
        data = data.encode()
    if len(data) > max_bytes:
        raise error(f"{what} is {len(data)} bytes, over the limit of {max_bytes} bytes for this kind of file; "
                    "it was not written by optimum-npu: re-download or recompile the model")
    depth = nesting_depth(data)
    if depth > max_depth:
        raise error(f"{what} is nested {depth} levels deep, over the limit of {max_depth}; it was not written by "
                    "optimum-npu: re-download or recompile the model")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as err:
        raise error(f"{what} is not valid JSON ({err}); re-download or recompile the model") from None


def load_json(path: str | os.PathLike, *, what: str | None = None, max_bytes: int = MAX_DOCUMENT_BYTES,
              max_depth: int = MAX_DEPTH, error: type[ValueError] = UntrustedDocumentError) -> Any:
    """``parse_json`` of a file, whose size is checked on disk before it is read."""
    path = Path(path)
    what = what or str(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{what} is {size} bytes, over the limit of {max_bytes} bytes for this kind of file; it was "
                        "not written by optimum-npu: re-download or recompile the model")
        data = path.read_bytes()
    except OSError as err:
        raise error(f"{what} cannot be read ({err.strerror or err}); re-download or recompile the model") from None
    return parse_json(data, what=what, max_bytes=max_bytes, max_depth=max_depth, error=error)


def expect_dict(value: Any, what: str, error: type[ValueError] = UntrustedDocumentError) -> dict:
    """``value`` if it is a JSON object, else a clear error."""
    if not isinstance(value, dict):
        raise error(f"{what} must be a JSON object, got {type(value).__name__}; re-download or recompile the model")
    return value
