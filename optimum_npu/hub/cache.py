"""The local compile cache: compiled artifacts reused by content key instead of recompiled.

Layout (``$OPTIMUM_NPU_CACHE``, default ``~/.cache/optimum-npu/compiled``)::

    <key>/artifact/...     a complete compiled artifact (with its npu_manifest.json)
    <key>/entry.json       what the key was computed from (see ``cache_key.py``), size, date

Entries are written to a temporary sibling (``.<key prefix>.tmp-*``) and renamed into place, so a
reader never sees a half-written entry; ``clear()`` also removes the temporary folders a killed
process left (``.<key prefix>.tmp-*``, ``.pull-*``: only those names). An entry is untrusted data
(a shared cache can be written by others): every reuse verifies the artifact as a normal load
does (``verify_artifact``), and then checks that it *is* the compile asked for: ``verify_hit``
(for decoders ``hub/cache_verify.py``: knobs, configs, tokenizer files, and every weight the
graphs name against the HF model's tensors). An entry that fails either is removed and the model
is recompiled. Only the files an entry's manifest lists are ever copied out of it. ``OPTIMUM_NPU_DISABLE_CACHE=1``
(or ``compile_cache=False``) turns the cache off. With ``OPTIMUM_NPU_CACHE_REPO=org/name``
a local miss is also looked up in that Hub repository (see ``remote_cache.py``; ``cached_compile.py``
puts the two together).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from optimum_npu.compile.artifact import ArtifactError, read_manifest, verify_artifact
from optimum_npu.compile.artifact_write import copy_listed
from optimum_npu.hub.cache_key import CacheKey
from optimum_npu.untrusted import expect_dict, load_json

logger = logging.getLogger(__name__)

ENTRY_FILE = "entry.json"
ARTIFACT_DIR = "artifact"
_TRUE = ("1", "true", "yes", "on")
_KEY = re.compile(r"[0-9a-f]{64}")
#: Temporary folders ``store`` and ``pull_entries`` create in the cache root (``tempfile`` adds 8 characters).
_LEFTOVER = re.compile(r"\.([0-9a-f]{16}\.tmp|pull)-[a-z0-9_]{8}")


def check_key(key: object, where: str) -> str:
    """``key`` if it is a cache key (64 lowercase hex digits, also a safe folder name), else ValueError."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError(f"{where}: {str(key)[:80]!r} is not a compile-cache key (64 lowercase hex digits); the "
                         "cache holds a folder it did not write: remove it")
    return key


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
        return self.root / check_key(key, f"compile cache {self.root}")

    def artifact_dir(self, key: str) -> Path:
        return self.root / key / ARTIFACT_DIR

    # ---- lookup and store ---------------------------------------------------------------------
    def verified_artifact(self, key: str) -> Path | None:
        """The entry's artifact if present and intact; a corrupt entry is removed (returns None)."""
        artifact = self.artifact_dir(key)
        if not os.path.lexists(self.entry_dir(key)):
            return None
        try:
            if self.entry_dir(key).is_symlink():
                raise ArtifactError("the entry folder is a symbolic link")
            verify_artifact(artifact)
            info = expect_dict(load_json(self.entry_dir(key) / ENTRY_FILE, error=ArtifactError), ENTRY_FILE,
                               ArtifactError)
            if info.get("key") != key:
                raise ArtifactError(f"{ENTRY_FILE} names key {info.get('key')!r}")
        except (ArtifactError, OSError, ValueError) as err:
            logger.warning("compile cache entry %s is corrupt (%s); removing it and recompiling", key[:16], err)
            self.remove(key)
            return None
        return artifact

    def fetch(self, key: str, target: Path) -> bool:
        """Copies the verified local entry ``key`` to ``target``; False on a miss (``cached_compile`` pulls
        a miss from ``repo_id`` first)."""
        artifact = self.verified_artifact(key)
        if artifact is None:
            return False
        copy_listed(artifact, target, read_manifest(artifact), copy_function=_link_or_copy)
        return True

    def store(self, cache_key: CacheKey, artifact: Path) -> Path:
        """Adds ``artifact`` under ``cache_key`` atomically; an existing entry is kept (first writer wins)."""
        info = {"key": cache_key.key, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "size_bytes": sum(e["size"] for e in read_manifest(artifact).values()), "inputs": cache_key.inputs}
        return self.install(cache_key.key, artifact, info)

    def install(self, key: str, artifact: Path, info: dict[str, Any]) -> Path:
        """Writes entry ``key`` from a verified ``artifact`` (its listed files only) and ``info`` atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{check_key(key, 'compile cache')[:16]}.tmp-", dir=self.root))
        try:
            copy_listed(artifact, tmp / ARTIFACT_DIR, read_manifest(artifact), copy_function=_link_or_copy)
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
        """``entry.json`` of every entry (unreadable ones are listed with an ``error``), oldest first.

        Only folders named by a key are entries; an entry's ``key`` is always its folder name.
        """
        found = []
        for path in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            if not _KEY.fullmatch(path.name) or not os.path.lexists(path):
                continue
            try:
                info = expect_dict(load_json(path / ENTRY_FILE), ENTRY_FILE)
                if info.get("key") != path.name:
                    raise ValueError(f"it names another key, {str(info.get('key'))[:80]!r}")
                found.append(info)
            except (OSError, ValueError) as err:
                found.append({"key": path.name, "error": f"unreadable {ENTRY_FILE}: {err}"})
        return sorted(found, key=lambda e: e.get("created", ""))

    def match(self, prefixes: list[str]) -> list[str]:
        """Full keys of the entries named by ``prefixes`` (each must name exactly one entry)."""
        keys = [e["key"] for e in self.entries()]
        return [_match_one(prefix, keys, f"local cache {self.root}") for prefix in prefixes]

    def remove(self, key: str) -> None:
        path = self.entry_dir(key)
        if path.is_symlink():
            path.unlink()  # never follow a link out of the cache
        else:
            shutil.rmtree(path, ignore_errors=True)

    def leftovers(self) -> list[Path]:
        """Temporary folders an interrupted ``store`` or pull left in the cache root (exact names only)."""
        if not self.root.is_dir():
            return []
        return [p for p in self.root.iterdir() if _LEFTOVER.fullmatch(p.name) and p.is_dir() and not p.is_symlink()]

    def clear(self, keys: list[str] | None = None) -> list[str]:
        """Removes the given entries (all when ``keys`` is None) and the leftovers; returns the removed keys.

        A store or pull in progress in another process at that moment fails and compiles instead.
        """
        removed = self.match(keys) if keys else [e["key"] for e in self.entries()]
        for key in removed:
            self.remove(key)
        for path in self.leftovers():
            shutil.rmtree(path, ignore_errors=True)
        return removed


def _match_one(prefix: str, keys: list[str], where: str) -> str:
    matches = [k for k in keys if k.startswith(prefix)]
    if len(matches) != 1:
        found = "no entry" if not matches else f"{len(matches)} entries"
        raise ValueError(f"cache key {prefix!r} matches {found} in {where}; give a longer prefix or one of the "
                         f"keys from `optimum-npu cache list` ({len(keys)} entries)")
    return matches[0]
