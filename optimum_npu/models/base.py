"""HF-facing base class: resolve a checkpoint, compile it or load its artifact, save it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from optimum_npu.compile.artifact import ArtifactError, verify_artifact
from optimum_npu.compile.artifact_write import copy_artifact
from optimum_npu.device.device import DeviceRegistry
from optimum_npu.hub.card import CardSection, build_model_card
from optimum_npu.hub.push import check_push, upload_artifact
from optimum_npu.models.hf_compat import count_parameters, requested_dtype
from optimum_npu.schema import MANIFEST_FILE, NPU_CONFIG_FILE

#: ``from_pretrained`` keyword arguments forwarded to ``huggingface_hub.snapshot_download``.
HUB_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "force_download")


class HubDownloadError(ValueError):
    """A model id that is not a local directory could not be fetched from the Hub (the message says why)."""


def resolve_checkpoint(model_id: str | os.PathLike, hub_kwargs: dict[str, Any]) -> Path:
    """A local directory as is; a Hub repo id (``name`` or ``org/name``) is fetched (honours HF_HUB_OFFLINE).

    Anything else that is not a directory is refused as a missing local path; a failed download is one
    ValueError that says the id was tried as a Hub repository after no local directory had that name.
    """
    path = Path(model_id)
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{model_id!r} is a file; pass a checkpoint directory or a Hub repo id")
    text = str(model_id)
    looks_local = text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text or text.endswith("/")
    if looks_local or isinstance(model_id, os.PathLike):
        raise ValueError(f"{model_id!r}: no such directory ({path.expanduser().absolute()} does not exist); check the "
                         "path, or give a Hub repo id as 'org/name'")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(snapshot_download(text, **hub_kwargs))
    except HFValidationError as err:
        raise ValueError(f"{model_id!r} is neither a local directory nor a valid Hub repo id "
                         f"({str(err).splitlines()[0]})") from None
    except (OSError, ValueError) as err:  # offline, unknown repository, gated, network down (HF errors are OSErrors)
        reason = " ".join(str(err).split())[:400]
        raise HubDownloadError(f"{model_id!r} is not a local directory, so it was looked up on the Hub, which failed: "
                               f"{type(err).__name__}: {reason}. Check the local path (no folder of that name "
                               "exists here) or the repo id, the revision and your network / HF_HUB_OFFLINE / "
                               "token") from None


class NPUPreTrainedModel(PreTrainedModel):
    """Common behaviour of compiled NPU models. Subclasses implement ``_export`` and ``_load``.

    The compiled artifact is the source of truth: a freshly exported model lives in a
    temporary artifact directory until ``save_pretrained`` copies it (atomically) elsewhere.
    """

    base_model_prefix = "npu"
    _tmp_dir: tempfile.TemporaryDirectory | None = None
    artifact_dir: Path

    #: The Transformers auto class of the HF model this family compiles (for ``num_parameters``).
    hf_auto_class: Any = None

    @property
    def device(self) -> torch.device:
        """Inputs and outputs live on the host; the graphs run on the simulated NPU."""
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """The compiled compute dtype (``inputs.to(model.dtype)`` works as with an HF model)."""
        return getattr(torch, self.npu_dtype)

    @property
    def npu_dtype(self) -> str:
        """The compute dtype's name in the compile knobs (each family says where it lives)."""
        raise NotImplementedError(f"{type(self).__name__} does not say its compute dtype")

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """The compiled HF model's parameter count (counted on a weightless copy of its config)."""
        return count_parameters(self.hf_auto_class, self.config, only_trainable=only_trainable,
                                exclude_embeddings=exclude_embeddings)

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={value}" for key, value in self.npu_summary().items())
        return f"{type(self).__name__}({fields})"

    def npu_summary(self) -> dict[str, Any]:
        """What ``repr`` shows: architecture, target, dtype, graphs and buckets, devices, artifact."""
        return {"artifact": str(self.artifact_dir)}

    @classmethod
    def from_pretrained(cls, model_id: str | os.PathLike, *, export: bool = False, npu_config: Any = None,
                        compile_cache: Any = None, device_registry: DeviceRegistry | None = None,
                        **kwargs) -> "NPUPreTrainedModel":
        """Loads a compiled artifact, or compiles an HF checkpoint when ``export=True``.

        Args:
            model_id: a local directory or a Hub repo id.
            export: compile the HF checkpoint (``True``) or load a compiled artifact (``False``).
            npu_config: compile knobs (when exporting) or runtime options (when loading), as the
                family's config object or a dict.
            compile_cache: when exporting: None (default; on unless ``OPTIMUM_NPU_DISABLE_CACHE=1``),
                True, False, a cache directory or an ``optimum_npu.hub.CompileCache``.
            device_registry: the simulated node whose devices the model is loaded on; models loaded
                through one registry onto one device id share its memory (default: the shared
                ``optimum_npu.device.device.DEFAULT_REGISTRY``).
            kwargs: ``revision``, ``cache_dir``, ``token``, ``local_files_only``, ``force_download``
                for Hub downloads; ``dtype`` (or ``torch_dtype``): ``"auto"``, or a dtype that chooses the
                compute dtype at export and must be the compiled one at load.
        """
        dtype = requested_dtype(kwargs)
        unknown = sorted(set(kwargs) - set(HUB_KWARGS))
        if unknown:
            raise TypeError(f"from_pretrained() got unexpected arguments {unknown}; compile knobs go in "
                            f"npu_config={{...}}, Hub options are {list(HUB_KWARGS)}")
        hub_kwargs = {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}
        path = resolve_checkpoint(model_id, hub_kwargs)
        is_compiled = (path / MANIFEST_FILE).is_file()
        if export and (is_compiled or (path / NPU_CONFIG_FILE).is_file()):
            raise ValueError(f"{model_id} is already a compiled optimum-npu artifact; load it without export=True "
                             "(from_pretrained(path)) or point export=True at the original HF checkpoint")
        if export:
            npu_config = cls._with_compile_dtype(npu_config, dtype) if dtype else npu_config
            return cls._export(path, npu_config, compile_cache, device_registry)
        if not is_compiled and (path / NPU_CONFIG_FILE).is_file():
            raise ArtifactError(f"{model_id} holds a compiled artifact ({NPU_CONFIG_FILE}) without its "
                                f"{MANIFEST_FILE}, so its files cannot be verified; it is refused. Re-upload the "
                                "complete artifact (save_pretrained / `optimum-npu push`) or recompile the checkpoint")
        if not is_compiled:
            raise ArtifactError(f"{model_id} is not a compiled optimum-npu artifact ({MANIFEST_FILE} is missing); "
                                "pass export=True to compile the HF checkpoint")
        model = cls._load(path, verify_artifact(path), npu_config, device_registry)
        if dtype and dtype != model.npu_dtype:
            model.release()
            raise ValueError(f"dtype={dtype!r}: {model_id} was compiled for {model.npu_dtype} and an artifact's dtype "
                             "is fixed; load it with dtype='auto' (or none), or recompile the checkpoint with "
                             f"dtype={dtype!r}")
        return model

    @classmethod
    def _with_compile_dtype(cls, npu_config: Any, dtype: str) -> Any:
        """``npu_config`` with the compute dtype that ``from_pretrained(dtype=...)`` asks for."""
        raise ValueError(f"{cls.__name__} takes its dtype from npu_config; set it there")

    @staticmethod
    def _new_artifact_dir() -> tuple[tempfile.TemporaryDirectory, Path]:
        tmp = tempfile.TemporaryDirectory(prefix="optimum-npu-")
        return tmp, Path(tmp.name) / "artifact"

    @classmethod
    def card_section(cls, repo_id: str) -> "CardSection":
        """The family's part of the model card (pipeline tag, usage snippet, runtime options)."""
        raise NotImplementedError(f"{cls.__name__} does not define its model-card section")

    def card_figures(self, speed: bool = True) -> dict[str, Any] | None:
        """Figures for the model card (memory per category, simulated speed); None when the family has none."""
        return None

    def push_to_hub(self, repo_id: str, *, token: str | None = None, private: bool | None = None,
                    revision: str | None = None, commit_message: str | None = None,
                    commit_description: str | None = None, base_model: str | None = None, model_card: bool = True,
                    speed_estimate: bool = True):
        """Uploads the compiled artifact and a generated model card (``README.md``) to ``repo_id``.

        Args:
            repo_id: ``"org/name"``; created when missing.
            token: Hub token (default: ``HF_TOKEN`` or the stored login).
            private: visibility of a newly created repository (ignored when it exists).
            revision: branch to push to (created from ``main`` when missing); default ``main``.
            commit_message: default ``"Upload <architecture> compiled for <npu> with optimum-npu"``.
            commit_description: longer commit description.
            base_model: Hub id of the source checkpoint, written in the card metadata.
            model_card: write a generated ``README.md`` (False keeps the repository's own).
            speed_estimate: run a short simulated ``generate()`` for the card's speed figures.

        Returns:
            The ``huggingface_hub.CommitInfo`` of the upload commit.
        """
        verified = check_push(self.artifact_dir, repo_id)  # before anything is measured
        card = None
        if model_card:
            card = str(build_model_card(self.artifact_dir, self.card_section(repo_id), repo_id=repo_id,
                                        base_model=base_model, figures=self.card_figures(speed_estimate)))
        return upload_artifact(self.artifact_dir, repo_id, card_text=card, token=token, private=private,
                               revision=revision, commit_message=commit_message,
                               commit_description=commit_description, verified=verified)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Writes the compiled artifact to ``save_directory`` (temporary directory, then rename).

        Only the files the artifact's manifest lists are written. ``save_directory`` must be new,
        empty or hold an optimum-npu artifact (which is replaced): a non-empty directory that is
        not one (or the current directory) is refused with ``SaveTargetError``, never overwritten.
        """
        target = Path(os.path.abspath(save_directory))
        if target == Path(os.path.abspath(self.artifact_dir)):
            return
        copy_artifact(self.artifact_dir, target)
