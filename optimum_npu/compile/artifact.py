"""The compiled artifact on disk: the manifest, and verification on load (writing: ``artifact_write``).

Layout of a compiled model directory::

    npu_config.json            every compile knob, the target spec, library + format versions
    config.json                the HF model config
    generation_config.json
    tokenizer files            when the source checkpoint has them
    model.safetensors          all weights, once (model-tp<r>-of-<N>.safetensors per rank under TP)
    graphs/<name>.graph.json   one declarative graph per compiled graph
    npu_manifest.json          sha256 and size of every file above

An artifact is untrusted data (ARCHITECTURE.md section 4): whoever publishes a Hub repository or
writes a shared cache controls every byte, manifest included. ``verify_artifact`` therefore checks
the manifest as data (a closed, bounded list of normalised relative POSIX paths with a sha256 and
a size each), refuses any symbolic link in the directory, checks every listed file, and requires
every file the loader reads to be listed. Files present but *not* listed (a Hub repository's
``README.md`` and ``.gitattributes``, ``.cache/`` of ``hf download``, a stray ``.env``) are
ignored: never read, copied (``artifact_write.copy_artifact``), cached or uploaded (``hub/push.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable

from optimum_npu.compile.shape_prop import verify_shapes
from optimum_npu.schema import (ARTIFACT_FORMAT_VERSION, GRAPH_DIR, GRAPH_SUFFIX, MANIFEST_FILE, NPU_CONFIG_FILE,
                                Graph, check_graph_name, weights_file)
from optimum_npu.untrusted import MAX_GRAPH_BYTES, load_json
from optimum_npu.version import __version__

#: Most files a manifest may list, and most directory entries ``verify_artifact`` walks.
MAX_FILES = 10_000
MAX_WALK_ENTRIES = 100_000
MAX_PATH_CHARS = 1024
#: Files the loaders read when present: when present they must be listed.
READ_IF_PRESENT = ("generation_config.json",)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FIX = "re-download or recompile the model"


class ArtifactError(ValueError):
    """A compiled artifact is missing, tampered with, truncated or from an incompatible version."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def graph_path(root: Path, name: str) -> Path:
    """``graphs/<name>.graph.json``; the name is checked first (letters, digits, ``_``), so it stays a file name."""
    check_graph_name(name)
    return root / GRAPH_DIR / f"{name}{GRAPH_SUFFIX}"


# ---- paths and links ----------------------------------------------------------------------------
def check_relpath(rel: Any, where: str) -> str:
    """``rel`` if it is a normalised relative POSIX path inside the artifact, else ``ArtifactError``."""
    if not isinstance(rel, str):
        raise ArtifactError(f"{where}: file path {rel!r} is not a string; {_FIX}")
    parts = rel.split("/")
    bad = ("is empty" if not rel else "is too long" if len(rel) > MAX_PATH_CHARS
           else "is absolute" if rel.startswith("/") or re.match(r"[A-Za-z]:", rel)
           else "contains a backslash" if "\\" in rel
           else "contains a control character" if any(ord(c) < 32 or ord(c) == 127 for c in rel)
           else "leaves the artifact (..)" if ".." in parts
           else "is not normalised (empty or '.' component)" if "" in parts or "." in parts
           else "is the manifest itself" if rel == MANIFEST_FILE else None)
    if bad:
        raise ArtifactError(f"{where}: file path {rel!r} {bad}; only relative POSIX paths inside the artifact "
                            f"(like 'graphs/prefill.graph.json') are allowed: {_FIX}")
    return rel


def _hub_blobs(root: Path) -> str | None:
    """The ``blobs`` folder when ``root`` is a Hugging Face Hub cache snapshot (``models--*/snapshots/<rev>``)."""
    real = Path(os.path.realpath(root))
    repo = real.parent.parent
    if real.parent.name == "snapshots" and repo.name.startswith("models--") and (repo / "blobs").is_dir():
        return os.path.realpath(repo / "blobs")
    return None


def check_no_symlinks(root: Path) -> None:
    """Refuses any symbolic link (or walk beyond ``MAX_WALK_ENTRIES``) under ``root``, never following links.

    The one exception is a Hub cache snapshot, where ``huggingface_hub`` itself links every file
    to ``../../blobs/<hash>``: such a link is accepted only when it resolves to a regular file
    in that repository's ``blobs`` folder.
    """
    blobs, seen = _hub_blobs(root), 0
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            seen += 1
            if seen > MAX_WALK_ENTRIES:
                raise ArtifactError(f"{root} holds more than {MAX_WALK_ENTRIES} files and folders; an artifact "
                                    f"lists at most {MAX_FILES} files: {_FIX}")
            path = os.path.join(folder, name)
            if not stat.S_ISLNK(os.lstat(path).st_mode):
                continue
            real = os.path.realpath(path)
            if blobs and name in files and os.path.dirname(real) == blobs and os.path.isfile(real) \
                    and not os.path.islink(real):
                continue
            rel = Path(path).relative_to(root).as_posix()
            raise ArtifactError(f"{root}: {rel} is a symbolic link; an artifact must not contain links (they "
                                "could make the loader read, copy or upload files outside it). Remove the link, "
                                f"or {_FIX}")


# ---- the manifest ---------------------------------------------------------------------------------
def read_manifest(root: Path) -> dict[str, dict[str, Any]]:
    """The manifest's ``files`` (path -> {sha256, size}), validated as data; checks the format version."""
    root = Path(root)
    path = root / MANIFEST_FILE
    if not path.is_file():
        raise ArtifactError(f"{root} is not a compiled optimum-npu model: {MANIFEST_FILE} is missing. Compile the "
                            "checkpoint with from_pretrained(..., export=True) or `optimum-npu export`")
    manifest = load_json(path, what=f"{path} (corrupt or not written by optimum-npu)", error=ArtifactError)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict) \
            or "format_version" not in manifest:
        raise ArtifactError(f"{path} is corrupt: it must be an object with 'format_version' and a 'files' "
                            f"object; {_FIX}")
    version = manifest["format_version"]
    if version != ARTIFACT_FORMAT_VERSION or isinstance(version, bool):
        raise ArtifactError(
            f"{root} uses artifact format version {version!r}, but this optimum-npu ({__version__}) reads version "
            f"{ARTIFACT_FORMAT_VERSION}; recompile it with this release or install the release that wrote it "
            f"(library {manifest.get('library_version', 'unknown')!r})"
        )
    files = manifest["files"]
    if len(files) > MAX_FILES:
        raise ArtifactError(f"{path} lists {len(files)} files, over the limit of {MAX_FILES}; {_FIX}")
    for rel, entry in files.items():
        check_relpath(rel, str(path))
        if not isinstance(entry, dict) or set(entry) != {"sha256", "size"}:
            raise ArtifactError(f"{path}: the entry of {rel!r} must be exactly {{'sha256': ..., 'size': ...}}; {_FIX}")
        if not isinstance(entry["sha256"], str) or not _SHA256.fullmatch(entry["sha256"]):
            raise ArtifactError(f"{path}: the sha256 of {rel!r} must be 64 lowercase hex digits; {_FIX}")
        size = entry["size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ArtifactError(f"{path}: the size of {rel!r} must be a non-negative integer, got {size!r}; {_FIX}")
    return files


def require_listed(root: Path, rel: str, files: Iterable[str] | None = None) -> Path:
    """``root / rel`` when ``rel`` is a valid path listed in the manifest (``files``: the listing if already read).

    Loaders call it before reading any file that ``verify_artifact`` does not already require.
    """
    check_relpath(rel, f"{root}")
    if rel not in (files if files is not None else read_manifest(root)):
        raise ArtifactError(f"{root}: {rel} is not listed in {MANIFEST_FILE}, so it is not part of the artifact "
                            f"and is never read; {_FIX}")
    return Path(root) / rel


def write_manifest(root: Path) -> dict[str, Any]:
    """Signs every regular file under ``root`` (a directory optimum-npu just wrote; links are refused)."""
    root = Path(root)
    check_no_symlinks(root)
    rels = [(Path(folder) / name).relative_to(root).as_posix()
            for folder, _, names in os.walk(root) for name in names]
    files = {}
    for rel in sorted((r for r in rels if r != MANIFEST_FILE), key=lambda r: r.split("/")):
        path = root / rel
        files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    manifest = {"format_version": ARTIFACT_FORMAT_VERSION, "library_version": __version__, "files": files}
    (root / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
    return manifest


# ---- verification -----------------------------------------------------------------------------------
def _int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


#: The config document of a submodule folder, in the order they are looked for (the language model of a
#: vision-language artifact stores ``npu_config.json``, its visual encoder ``visual_config.json``).
SUBMODULE_CONFIG_FILES = (NPU_CONFIG_FILE, "visual_config.json")


def _graph_files(document: Any, prefix: str, what: str) -> list[str]:
    """Graphs and weight shards a config document (of the folder ``prefix``) makes the loader read."""
    graphs = document.get("graphs") if isinstance(document, dict) else None
    size = document.get("tensor_parallel_size", 1) if isinstance(document, dict) else None
    if not isinstance(graphs, list) or len(graphs) > MAX_FILES or not all(isinstance(g, str) for g in graphs):
        raise ArtifactError(f"{what}: 'graphs' must be a list of graph names; {_FIX}")
    if not _int_in(size, 1, MAX_FILES):
        raise ArtifactError(f"{what}: tensor_parallel_size must be a positive integer, got {size!r}; {_FIX}")
    names = [graph_path(Path(prefix), g).as_posix() for g in graphs]
    return names + [(Path(prefix) / weights_file(rank, size)).as_posix() for rank in range(size)]


def required_files(root: Path, npu_config: dict[str, Any]) -> list[str]:
    """Every file the loader reads (reads only files already verified), from the artifact's structure alone:
    ``npu_config.json`` and ``config.json``, then either the graphs and weight shards it lists, or, for an
    artifact of submodules (``"submodules": {name: folder}``), each folder's config document
    (``SUBMODULE_CONFIG_FILES``) and the graphs and shards that lists."""
    where = f"{root}/{NPU_CONFIG_FILE}"
    if "submodules" not in npu_config:
        return [NPU_CONFIG_FILE, "config.json", *_graph_files(npu_config, ".", where)]
    subs = npu_config["submodules"]
    if not isinstance(subs, dict) or not subs or len(subs) > 16 or not all(isinstance(k, str) for k in subs):
        raise ArtifactError(f"{where}: 'submodules' must map submodule names to their folders; {_FIX}")
    required = [NPU_CONFIG_FILE, "config.json"]
    listed = set(read_manifest(root))
    for name, folder in sorted(subs.items()):
        folder = check_relpath(folder, f"{where} submodules")
        document = next((f"{folder}/{f}" for f in SUBMODULE_CONFIG_FILES if f"{folder}/{f}" in listed), None)
        if document is None:
            raise ArtifactError(f"{where}: submodule {name[:80]!r} has no config document "
                                f"({' or '.join(SUBMODULE_CONFIG_FILES)}) in the manifest; {_FIX}")
        required.append(document)
        required += _graph_files(load_json(require_listed(root, document), error=ArtifactError), folder,
                                 f"{root}/{document}")
    return required


def verify_artifact(root: Path) -> dict[str, Any]:
    """Checks links, manifest, format version, size and sha256 of every listed file, and that every
    file the loader reads is listed; returns the npu_config dict."""
    root = Path(root)
    files = read_manifest(root)
    check_no_symlinks(root)
    for rel, entry in files.items():
        path = root / rel
        try:
            info = path.stat()
        except OSError:
            info = None
        if info is None or not stat.S_ISREG(info.st_mode):
            raise ArtifactError(f"{root}: file {rel} listed in the manifest is missing; the artifact is incomplete, "
                                "re-download or recompile it")
        if info.st_size != entry["size"]:
            raise ArtifactError(f"{root}: {rel} is {info.st_size} bytes but the manifest says "
                                f"{entry['size']} (truncated or modified); {_FIX}")
    for rel, entry in files.items():  # sizes first: a truncated file is reported before any hashing
        if sha256_file(root / rel) != entry["sha256"]:
            raise ArtifactError(f"{root}: {rel} does not match its sha256 in the manifest (modified or corrupt); "
                                f"{_FIX}")
    if NPU_CONFIG_FILE not in files:
        raise ArtifactError(f"{root}: {NPU_CONFIG_FILE} is not in the manifest; recompile the model")
    npu_config = load_json(root / NPU_CONFIG_FILE, error=ArtifactError)
    if not isinstance(npu_config, dict):
        raise ArtifactError(f"{root}/{NPU_CONFIG_FILE} must be a JSON object; {_FIX}")
    for rel in required_files(root, npu_config):
        if rel not in files:
            kind = rel.removeprefix(f"{GRAPH_DIR}/").removesuffix(GRAPH_SUFFIX)
            what = f"graph {kind!r} ({rel})" if rel.endswith(GRAPH_SUFFIX) else rel
            raise ArtifactError(f"{root}: {what} is missing from the artifact (not listed in {MANIFEST_FILE}); the "
                                f"loader reads only listed files: {_FIX}")
    for rel in READ_IF_PRESENT:
        if rel not in files and os.path.lexists(root / rel):
            raise ArtifactError(f"{root}: {rel} is present but not listed in {MANIFEST_FILE}; the loader would read "
                                f"it, so the artifact is refused: delete {rel} or {_FIX}")
    return npu_config


#: sha256 of the graph files whose stored shapes this process has proven (the most recent ``MAX_PROVEN_GRAPHS``).
#: The proof depends on the file's bytes alone (the operator table is fixed), so a graph read again byte for
#: byte (a reload, a second model of the same artifact, a compile-cache hit) is not proven twice; any other
#: bytes are.
_PROVEN_GRAPHS: OrderedDict[str, None] = OrderedDict()
_PROVEN_LOCK = threading.Lock()
MAX_PROVEN_GRAPHS = 1024


def read_graph(root: Path, name: str, prove_shapes: bool = True) -> Graph:
    """The graph ``name`` of a verified artifact folder (size bounded before reading).

    ``prove_shapes=False`` skips the fake-tensor proof of the stored shapes, for callers that read only
    the graph's inputs and never size or run it (the compile-cache check; the load that follows proves them).
    """
    path = graph_path(root, name)
    if path.stat().st_size > MAX_GRAPH_BYTES:
        raise ArtifactError(f"{path} is {path.stat().st_size} bytes, over the limit of {MAX_GRAPH_BYTES} for a "
                            f"graph; {_FIX}")
    data = path.read_bytes()
    graph = Graph.from_json(data, what=f"{GRAPH_DIR}/{name}{GRAPH_SUFFIX}")
    if graph.name != name:
        raise ArtifactError(f"{path} holds graph {graph.name!r}, not {name!r}; {_FIX}")
    if prove_shapes:  # the stored shapes size the device reservation: prove them before trusting them
        _prove_once(graph, hashlib.sha256(data).hexdigest())
    return graph


def _prove_once(graph: Graph, digest: str) -> None:
    """``verify_shapes(graph)`` unless the same bytes (``digest``) were proven before in this process."""
    with _PROVEN_LOCK:
        proven = digest in _PROVEN_GRAPHS
    if not proven:
        verify_shapes(graph)  # raises for a graph whose stored shapes are not what it computes
    with _PROVEN_LOCK:
        _PROVEN_GRAPHS[digest] = None
        _PROVEN_GRAPHS.move_to_end(digest)
        while len(_PROVEN_GRAPHS) > MAX_PROVEN_GRAPHS:
            _PROVEN_GRAPHS.popitem(last=False)
