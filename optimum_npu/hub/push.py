"""Upload a compiled artifact to the Hub.

``upload_artifact`` verifies the artifact against its manifest, creates the repository (and
the branch) when missing, writes the given ``README.md`` and uploads the listed files (nothing
the manifest does not list) in one commit with ``huggingface_hub``. The model card comes from
the artifact's family (``optimum_npu.models.publish.push_artifact`` builds it and calls this). The token comes from the usual places when not given (``HF_TOKEN``,
``hf auth login``); ``HF_ENDPOINT`` selects another Hub.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, HfApi
from huggingface_hub.errors import HfHubHTTPError

from optimum_npu.compile.artifact import ArtifactError, read_manifest, verify_artifact
from optimum_npu.compile.artifact_write import copy_listed
from optimum_npu.schema import MANIFEST_FILE

#: Repository files removed when absent from the pushed artifact (stale graphs and weight shards).
STALE_PATTERNS = ["graphs/*", "*.safetensors"]


class HubPushError(ValueError):
    """A push the Hub refused (authentication, permissions, missing branch...); the message says why."""


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _stage(artifact: Path, card_text: str | None) -> tempfile.TemporaryDirectory:
    """A temporary folder of hard links to the files the manifest lists (and the manifest), plus README.md.

    Only listed files are staged: an unlisted ``.env``, a model card or a link in the
    artifact directory is never uploaded.
    """
    tmp = tempfile.TemporaryDirectory(prefix="optimum-npu-push-")
    copy_listed(artifact, Path(tmp.name), read_manifest(artifact), copy_function=_link_or_copy)
    if card_text is not None:
        (Path(tmp.name) / "README.md").unlink(missing_ok=True)  # a hard link: never write through it
        (Path(tmp.name) / "README.md").write_text(card_text)
    return tmp


def check_push(artifact_dir: str | os.PathLike, repo_id: str) -> dict[str, Any]:
    """Verifies the artifact and the repository id before anything is measured or uploaded; returns the
    verified ``npu_config.json``."""
    artifact = Path(artifact_dir)
    if not (artifact / MANIFEST_FILE).is_file():
        raise ArtifactError(f"cannot push {artifact}: it is not a compiled optimum-npu artifact ({MANIFEST_FILE} "
                            "is missing); compile it first with `optimum-npu export` or save_pretrained()")
    stored = verify_artifact(artifact)
    if "/" not in repo_id:
        raise ValueError(f"repo_id={repo_id!r} must be 'namespace/name' (your user or organisation, then the "
                         "repository name), e.g. 'my-org/llama-npu'")
    return stored


def upload_artifact(artifact_dir: str | os.PathLike, repo_id: str, *, card_text: str | None = None,
                    token: str | None = None, private: bool | None = None, revision: str | None = None,
                    commit_message: str | None = None, commit_description: str | None = None,
                    verified: dict[str, Any] | None = None) -> CommitInfo:
    """Uploads a compiled artifact (its listed files) and ``card_text`` as README.md to ``repo_id``.

    Args:
        artifact_dir: a compiled artifact directory (verified before anything is uploaded).
        repo_id: ``"org/name"``; created when missing.
        card_text: the README.md to write (None keeps the repository's own).
        token: Hub token (default: ``HF_TOKEN`` or the stored login).
        private: visibility of a newly created repository (ignored when it exists).
        revision: branch to push to (created from ``main`` when missing); default ``main``.
        commit_message: default ``"Upload <architecture> compiled for <npu> with optimum-npu"``.
        commit_description: longer commit description.
        verified: what ``check_push`` returned for this artifact and repository, when the caller just ran it
            (the artifact is not hashed a second time).

    Returns:
        The ``huggingface_hub.CommitInfo`` of the upload commit.
    """
    stored = verified if verified is not None else check_push(artifact_dir, repo_id)
    message = commit_message or (f"Upload {stored.get('architecture', 'model')} compiled for "
                                 f"{stored['npu_spec']['name']} with optimum-npu")
    api = HfApi(token=token)
    staged = _stage(Path(artifact_dir), card_text)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision not in (None, "main"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        return api.upload_folder(repo_id=repo_id, folder_path=staged.name, revision=revision,
                                 commit_message=message, commit_description=commit_description,
                                 delete_patterns=STALE_PATTERNS)
    except HfHubHTTPError as err:
        raise HubPushError(_explain(err, repo_id, api.endpoint)) from err
    finally:
        staged.cleanup()


def _explain(err: HfHubHTTPError, repo_id: str, endpoint: str) -> str:
    status = err.response.status_code if err.response is not None else None
    if status == 401:
        return (f"pushing to {repo_id} on {endpoint} was refused (401: the token is missing or invalid); pass "
                "token=... / --token, set HF_TOKEN, or log in with `hf auth login`")
    if status == 403:
        return (f"pushing to {repo_id} on {endpoint} was refused (403: the token cannot write to this namespace); "
                "use a token with write access to it or push to your own namespace")
    return f"pushing to {repo_id} on {endpoint} failed: {err}"
