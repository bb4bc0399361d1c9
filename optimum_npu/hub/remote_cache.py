"""A Hub model repository as a shared compile cache: push, pull, list and clear entries.

The repository mirrors the local layout: one folder per key, ``<key>/artifact/...`` and
``<key>/entry.json``. Only the files an entry's manifest lists (and ``entry.json``) are pushed or
pulled. Pulled entries are verified against their manifest before they are copied into the local
cache, and a hit is then checked against the model being compiled (``compile_with_cache``), so a
corrupt, tampered or re-signed remote entry is never used. Top-level folders that are not keys are
ignored.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationDelete, HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError

from optimum_npu.compile.artifact import ArtifactError, read_manifest
from optimum_npu.compile.artifact_write import copy_listed
from optimum_npu.hub.cache import _KEY, ARTIFACT_DIR, ENTRY_FILE, CompileCache, _match_one
from optimum_npu.untrusted import expect_dict, load_json


def _api(token: str | None) -> HfApi:
    return HfApi(token=token)


def remote_keys(repo_id: str, token: str | None = None, revision: str | None = None) -> list[str]:
    """Keys (top-level folders) of the cache repository ``repo_id``."""
    from huggingface_hub.hf_api import RepoFolder

    tree = _api(token).list_repo_tree(repo_id, revision=revision)
    return sorted(item.path for item in tree if isinstance(item, RepoFolder) and _KEY.fullmatch(item.path))


def remote_entries(repo_id: str, token: str | None = None, revision: str | None = None) -> list[dict[str, Any]]:
    """``entry.json`` of every entry in ``repo_id`` (downloaded; small files)."""
    found = []
    for key in remote_keys(repo_id, token, revision):
        try:
            path = hf_hub_download(repo_id, f"{key}/{ENTRY_FILE}", token=token, revision=revision)
            found.append(expect_dict(load_json(path, what=f"{repo_id}: {key}/{ENTRY_FILE}"), ENTRY_FILE))
        except (EntryNotFoundError, ValueError) as err:
            found.append({"key": key, "error": f"no readable {ENTRY_FILE}: {err}"})
    return sorted(found, key=lambda e: e.get("created", ""))


def push_entries(cache: CompileCache, repo_id: str, keys: list[str] | None = None, *, token: str | None = None,
                 private: bool | None = None, revision: str | None = None) -> list[str]:
    """Uploads local entries (all when ``keys`` is None; each verified first) to ``repo_id``.

    The repository is created when missing. Returns the pushed keys.
    """
    keys = cache.match(keys) if keys else [e["key"] for e in cache.entries() if "error" not in e]
    keys = [key for key in keys if cache.verified_artifact(key) is not None]
    if not keys:
        raise ValueError(f"no valid entries to push from the local cache {cache.root}; compile a model first or "
                         "check the keys with `optimum-npu cache list`")
    api = _api(token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision not in (None, "main"):
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="optimum-npu-cache-push-") as staged:
        for key in keys:  # only the listed files and entry.json: nothing else in the entry is uploaded
            artifact = cache.artifact_dir(key)
            copy_listed(artifact, Path(staged) / key / ARTIFACT_DIR, read_manifest(artifact))
            shutil.copy2(cache.entry_dir(key) / ENTRY_FILE, Path(staged) / key / ENTRY_FILE)
        api.upload_folder(repo_id=repo_id, folder_path=staged, revision=revision,
                          commit_message=f"optimum-npu compile cache: add {len(keys)} entries")
    return keys


def pull_entries(cache: CompileCache, repo_id: str, keys: list[str] | None = None, *, token: str | None = None,
                 revision: str | None = None) -> list[str]:
    """Downloads entries (all when ``keys`` is None; prefixes allowed) into the local cache; returns them.

    Each entry is verified against its manifest first; an entry that fails is refused with
    ``ArtifactError`` and not added.
    """
    from optimum_npu.compile.artifact import verify_artifact

    available = remote_keys(repo_id, token, revision)
    keys = [_match_one(k, available, f"Hub cache {repo_id}") for k in keys] if keys else available
    cache.root.mkdir(parents=True, exist_ok=True)
    pulled = []
    with tempfile.TemporaryDirectory(prefix=".pull-", dir=cache.root) as tmp:
        snapshot_download(repo_id, revision=revision, token=token, local_dir=tmp,
                          allow_patterns=[f"{key}/*" for key in keys])
        for key in keys:
            entry = Path(tmp) / key
            verify_artifact(entry / ARTIFACT_DIR)
            info = expect_dict(load_json(entry / ENTRY_FILE, what=f"Hub cache {repo_id}: {key}/{ENTRY_FILE}",
                                         error=ArtifactError), ENTRY_FILE, ArtifactError)
            if info.get("key") != key:
                raise ValueError(f"Hub cache {repo_id}: {key}/{ENTRY_FILE} names another key; the entry was "
                                 "renamed or tampered with: remove it with `optimum-npu cache clear --repo-id`")
            if cache.verified_artifact(key) is None:
                cache.install(key, entry / ARTIFACT_DIR, info)
            pulled.append(key)
    return pulled


def clear_entries(repo_id: str, keys: list[str] | None = None, *, token: str | None = None,
                  revision: str | None = None) -> list[str]:
    """Deletes entries (all when ``keys`` is None) from ``repo_id`` in one commit; returns them."""
    available = remote_keys(repo_id, token, revision)
    keys = [_match_one(k, available, f"Hub cache {repo_id}") for k in keys] if keys else available
    if keys:
        _api(token).create_commit(repo_id, [CommitOperationDelete(f"{key}/", is_folder=True) for key in keys],
                                  commit_message=f"optimum-npu compile cache: remove {len(keys)} entries",
                                  revision=revision)
    return keys
