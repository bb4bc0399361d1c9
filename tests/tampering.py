"""What an attacker who publishes an artifact can do: edit a file and re-sign the manifest."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from optimum_npu.compile.artifact import write_manifest
from optimum_npu.schema import MANIFEST_FILE


def edit_graph(root: Path, name: str, edit) -> None:
    """Applies ``edit(doc)`` to graph ``name``'s JSON document and re-signs the manifest."""
    path = root / "graphs" / f"{name}.graph.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    write_manifest(root)


def resign(root: Path, drop: tuple[str, ...] = (), extra: dict | None = None) -> None:
    """What an attacker does: recompute the manifest, then drop or add entries."""
    if (root / MANIFEST_FILE).exists():
        (root / MANIFEST_FILE).unlink()  # never write through a hard link shared with the cache
    manifest = write_manifest(root)
    for rel in drop:
        manifest["files"].pop(rel)
    manifest["files"].update(extra or {})
    (root / MANIFEST_FILE).unlink()
    (root / MANIFEST_FILE).write_text(json.dumps(manifest))


def swap_weights(path: Path, name: str = "lm_head.weight") -> None:
    """Replaces ``name`` by its rows reversed (a new file: the old inode may be shared with the cache)."""
    with safe_open(str(path), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        metadata = handle.metadata()
    tensors[name] = tensors[name].flip(0).contiguous()
    path.unlink()
    save_file(tensors, str(path), metadata=metadata)
