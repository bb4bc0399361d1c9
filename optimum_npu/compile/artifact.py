"""The compiled artifact on disk: atomic writing, the manifest, and verification on load.

Layout of a compiled model directory::

    npu_config.json            every compile knob, the target spec, library + format versions
    config.json                the HF model config
    generation_config.json
    tokenizer files            when the source checkpoint has them
    model.safetensors          all weights, once
    graphs/<name>.graph.json   one declarative graph per compiled graph
    npu_manifest.json          sha256 and size of every file above
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from optimum_npu.schema import (ARTIFACT_FORMAT_VERSION, GRAPH_DIR, GRAPH_SUFFIX, MANIFEST_FILE, NPU_CONFIG_FILE,
                                Graph)
from optimum_npu.version import __version__


class ArtifactError(ValueError):
    """A compiled artifact is missing, tampered with, truncated or from an incompatible version."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def graph_path(root: Path, name: str) -> Path:
    return root / GRAPH_DIR / f"{name}{GRAPH_SUFFIX}"


def write_manifest(root: Path) -> dict[str, Any]:
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p != root / MANIFEST_FILE):
        rel = path.relative_to(root).as_posix()
        files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    manifest = {"format_version": ARTIFACT_FORMAT_VERSION, "library_version": __version__, "files": files}
    (root / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
    return manifest


def write_atomically(target: Path, fill: Callable[[Path], None]) -> Path:
    """Runs ``fill(tmp_dir)``, writes the manifest, then renames the directory to ``target``.

    A failure leaves ``target`` as it was; an existing ``target`` is replaced only once the
    new artifact is complete.
    """
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    old = None
    try:
        fill(tmp)
        write_manifest(tmp)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "artifact")
        os.replace(tmp, target)
    except BaseException:
        if old is not None and (old / "artifact").exists() and not target.exists():
            os.replace(old / "artifact", target)  # put the previous artifact back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return target


def verify_artifact(root: Path) -> dict[str, Any]:
    """Checks format version, presence, size and sha256 of every file; returns the npu_config dict."""
    root = Path(root)
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ArtifactError(f"{root} is not a compiled optimum-npu model: {MANIFEST_FILE} is missing. Compile the "
                            "checkpoint with from_pretrained(..., export=True) or `optimum-npu export`")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        version = manifest["format_version"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ArtifactError(f"{manifest_path} is corrupt ({err!r}); re-download or recompile the model") from None
    if version != ARTIFACT_FORMAT_VERSION:
        raise ArtifactError(
            f"{root} uses artifact format version {version}, but this optimum-npu ({__version__}) reads version "
            f"{ARTIFACT_FORMAT_VERSION}; recompile it with this release or install the release that wrote it "
            f"(library {manifest.get('library_version', 'unknown')})"
        )
    for rel, entry in files.items():
        path = root / rel
        if not path.is_file():
            raise ArtifactError(f"{root}: file {rel} listed in the manifest is missing; the artifact is incomplete, "
                                "re-download or recompile it")
        if path.stat().st_size != entry["size"]:
            raise ArtifactError(f"{root}: {rel} is {path.stat().st_size} bytes but the manifest says "
                                f"{entry['size']} (truncated or modified); re-download or recompile the model")
        if sha256_file(path) != entry["sha256"]:
            raise ArtifactError(f"{root}: {rel} does not match its sha256 in the manifest (modified or corrupt); "
                                "re-download or recompile the model")
    if NPU_CONFIG_FILE not in files:
        raise ArtifactError(f"{root}: {NPU_CONFIG_FILE} is not in the manifest; recompile the model")
    npu_config = json.loads((root / NPU_CONFIG_FILE).read_text())
    for name in npu_config.get("graphs", []):
        rel = graph_path(Path("."), name).as_posix()
        if rel not in files:
            raise ArtifactError(f"{root}: graph {name!r} ({rel}) is missing from the artifact; recompile the model")
    return npu_config


def read_graph(root: Path, name: str) -> Graph:
    return Graph.from_json(graph_path(root, name).read_text())


def copy_artifact(source: Path, target: Path) -> Path:
    """Copies a verified artifact directory atomically (used by save_pretrained)."""
    verify_artifact(source)

    def fill(tmp: Path) -> None:
        shutil.copytree(source, tmp, dirs_exist_ok=True)

    return write_atomically(target, fill)
