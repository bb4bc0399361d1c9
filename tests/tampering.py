"""What an attacker who publishes an artifact can do: edit a file and re-sign the manifest."""

from __future__ import annotations

import json
from pathlib import Path

from optimum_npu.compile.artifact import write_manifest


def edit_graph(root: Path, name: str, edit) -> None:
    """Applies ``edit(doc)`` to graph ``name``'s JSON document and re-signs the manifest."""
    path = root / "graphs" / f"{name}.graph.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    write_manifest(root)
