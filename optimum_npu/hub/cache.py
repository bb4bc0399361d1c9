"""The local compile cache: compiled artifacts reused by content key instead of recompiled.

Layout (``$OPTIMUM_NPU_CACHE``, default ``~/.cache/optimum-npu/compiled``)::

    <key>/artifact/...     a complete compiled artifact (with its npu_manifest.json)
    <key>/entry.json       what the key was computed from (see ``cache_key.py``), size, date

Entries are written to a temporary sibling and renamed into place, so a reader never sees a
half-written entry. Every reuse verifies the artifact against its manifest (sizes and sha256);
an entry that fails is removed and the model is recompiled. ``OPTIMUM_NPU_DISABLE_CACHE=1``
(or ``compile_cache=False``) turns the cache off. With ``OPTIMUM_NPU_CACHE_REPO=org/name``
a local miss is also looked up in that Hub repository (see ``remote_cache.py``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from optimum_npu.compile.artifact import ArtifactError, verify_artifact
from optimum_npu.hub.cache_key import CacheKey

logger = logging.getLogger(__name__)

ENTRY_FILE = "entry.json"
ARTIFACT_DIR = "artifact"
_TRUE = ("1", "true", "yes", "on")


def default_cache_dir() -> Path:
    """``$OPTIMUM_NPU_CACHE`` if set, else ``~/.cache/optimum-npu/compiled``."""
    return Path(os.environ.get("OPTIMUM_NPU_CACHE") or Path.home() / ".cache" / "optimum-npu" / "compiled")


def _link_or_copy(source: str, target: str) -> None:
    """Hard-links (instant, no extra disk) and falls back to a copy across file systems."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


class CompileCache:
    """A directory of compiled artifacts keyed by ``CacheKey.key``.

    Args:
        root: the cache directory (default: ``default_cache_dir()``).
        repo_id: optional Hub repository used as a shared cache: a local miss is pulled from it.
        token: Hub token for ``repo_id`` (default: the usual ``HF_TOKEN`` / login).
    """

    def __init__(self, root: str | os.PathLike | None = None, repo_id: str | None = None,
                 token: str | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.repo_id = repo_id
        self.token = token

    @classmethod
    def resolve(cls, option: "CompileCache | bool | str | os.PathLike | None") -> "CompileCache | None":
        """The cache a ``compile_cache=`` argument asks for (None = off).

        ``None`` follows the environment (on unless ``OPTIMUM_NPU_DISABLE_CACHE`` is set), ``True``
        forces the default cache, ``False`` disables it, a path selects a directory.
        """
        if isinstance(option, CompileCache):
            return option
        if option is False:
            return None
        if option is None and os.environ.get("OPTIMUM_NPU_DISABLE_CACHE", "").lower() in _TRUE:
            return None
        if option is None or option is True:
            return cls(repo_id=os.environ.get("OPTIMUM_NPU_CACHE_REPO") or None)
        if isinstance(option, (str, os.PathLike)):
            return cls(option)
        raise TypeError(f"compile_cache={option!r} is invalid: pass None (follow OPTIMUM_NPU_DISABLE_CACHE), "
                        "True, False, a directory path or a CompileCache")

    def entry_dir(self, key: str) -> Path:
        return self.root / key

    def artifact_dir(self, key: str) -> Path:
        return self.root / key / ARTIFACT_DIR

    # ---- lookup and store ---------------------------------------------------------------------
    def verified_artifact(self, key: str) -> Path | None:
        """The entry's artifact if present and intact; a corrupt entry is removed (returns None)."""
        artifact = self.artifact_dir(key)
        if not self.entry_dir(key).exists():
            return None
        try:
            verify_artifact(artifact)
            info = json.loads((self.entry_dir(key) / ENTRY_FILE).read_text())
            if info.get("key") != key:
                raise ArtifactError(f"{ENTRY_FILE} names key {info.get('key')!r}")
        except (ArtifactError, OSError, ValueError) as err:
            logger.warning("compile cache entry %s is corrupt (%s); removing it and recompiling", key[:16], err)
            self.remove(key)
            return None
        return artifact

    def fetch(self, key: str, target: Path) -> bool:
        """Copies the verified entry ``key`` to ``target`` (pulling it from ``repo_id`` on a local miss)."""
        artifact = self.verified_artifact(key)
        if artifact is None and self.repo_id:
            from optimum_npu.hub.remote_cache import pull_entries

            try:
                pull_entries(self, self.repo_id, [key], token=self.token)
            except Exception as err:  # offline, no such repo or entry, refused entry: compile instead
                logger.warning("compile cache: %s not pulled from %s (%s)", key[:16], self.repo_id, err)
            artifact = self.verified_artifact(key)
        if artifact is None:
            return False
        shutil.copytree(artifact, target, copy_function=_link_or_copy)
        return True

    def store(self, cache_key: CacheKey, artifact: Path) -> Path:
        """Adds ``artifact`` under ``cache_key`` atomically; an existing entry is kept (first writer wins)."""
        key = cache_key.key
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:16]}.tmp-", dir=self.root))
        try:
            shutil.copytree(artifact, tmp / ARTIFACT_DIR, copy_function=_link_or_copy)
            size = sum(p.stat().st_size for p in (tmp / ARTIFACT_DIR).rglob("*") if p.is_file())
            info = {"key": key, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "size_bytes": size,
                    "inputs": cache_key.inputs}
            (tmp / ENTRY_FILE).write_text(json.dumps(info, indent=1))
            try:
                os.replace(tmp, self.entry_dir(key))
            except OSError:
                if not self.entry_dir(key).exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return self.entry_dir(key)

    # ---- maintenance --------------------------------------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        """``entry.json`` of every entry (unreadable ones are listed with an ``error``), oldest first."""
        found = []
        for path in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            if path.name.startswith(".") or not path.is_dir():
                continue
            try:
                found.append(json.loads((path / ENTRY_FILE).read_text()))
            except (OSError, ValueError) as err:
                found.append({"key": path.name, "error": f"unreadable {ENTRY_FILE}: {err}"})
        return sorted(found, key=lambda e: e.get("created", ""))

    def match(self, prefixes: list[str]) -> list[str]:
        """Full keys of the entries named by ``prefixes`` (each must name exactly one entry)."""
        keys = [e["key"] for e in self.entries()]
        return [_match_one(prefix, keys, f"local cache {self.root}") for prefix in prefixes]

    def remove(self, key: str) -> None:
        shutil.rmtree(self.entry_dir(key), ignore_errors=True)

    def clear(self, keys: list[str] | None = None) -> list[str]:
        """Removes the given entries (all when ``keys`` is None); returns the removed keys."""
        removed = self.match(keys) if keys else [e["key"] for e in self.entries()]
        for key in removed:
            self.remove(key)
        return removed


def _match_one(prefix: str, keys: list[str], where: str) -> str:
    matches = [k for k in keys if k.startswith(prefix)]
    if len(matches) != 1:
        found = "no entry" if not matches else f"{len(matches)} entries"
        raise ValueError(f"cache key {prefix!r} matches {found} in {where}; give a longer prefix or one of the "
                         f"keys from `optimum-npu cache list` ({len(keys)} entries)")
    return matches[0]


def compile_with_cache(target: Path, cache_key: Callable[[], CacheKey], compile_fn: Callable[[Path], Any],
                       compile_cache: "CompileCache | bool | str | os.PathLike | None" = None) -> bool:
    """Fills ``target`` with a compiled artifact: from the cache on a hit, else by ``compile_fn(target)``.

    Args:
        target: directory to create (must not exist yet).
        cache_key: computes the key (only called when the cache is on).
        compile_fn: compiles into the given directory.
        compile_cache: see ``CompileCache.resolve``.

    Returns:
        True on a cache hit, False when ``compile_fn`` ran.
    """
    cache = CompileCache.resolve(compile_cache)
    if cache is None:
        compile_fn(target)
        return False
    start = time.perf_counter()
    key = cache_key()
    try:
        hit = cache.fetch(key.key, target)
    except OSError as err:  # unreadable cache directory: compile as if there were none
        logger.warning("compile cache %s unusable (%s); compiling", cache.root, err)
        shutil.rmtree(target, ignore_errors=True)
        hit = False
    if hit:
        logger.info("compile cache hit %s (%s) in %.3f s", key.key[:16], cache.root, time.perf_counter() - start)
        return True
    compile_fn(target)
    try:
        cache.store(key, target)
    except OSError as err:  # read-only or full disk: the compiled model is still good
        logger.warning("compile cache: could not store %s in %s (%s)", key.key[:16], cache.root, err)
        return False
    logger.info("compile cache miss %s: compiled and stored in %s", key.key[:16], cache.root)
    return False
