"""Push a compiled artifact directory to the Hub with the model card its family writes.

``push_artifact`` is ``push_to_hub`` for a directory (``optimum-npu push``): the artifact's family
(from its verified ``npu_config.json``, through the family registry) loads it to measure the
card's figures, then pushes it; without a card nothing is loaded.
"""

from __future__ import annotations

import os

from huggingface_hub import CommitInfo

from optimum_npu.hub.push import check_push, upload_artifact
from optimum_npu.models.families import family_named


def push_artifact(artifact_dir: str | os.PathLike, repo_id: str, *, model_card: bool = True,
                  **push_options) -> CommitInfo:
    """Uploads a compiled artifact and its model card to the Hub repository ``repo_id``.

    Args:
        artifact_dir: a compiled artifact directory (verified before anything is loaded or uploaded).
        repo_id: ``"org/name"``; created when missing.
        model_card: write a generated ``README.md`` (False keeps the repository's own and loads nothing).
        push_options: as ``NPUPreTrainedModel.push_to_hub`` (``token``, ``private``, ``revision``,
            ``commit_message``, ``commit_description``, ``base_model``, ``speed_estimate``).

    Returns:
        The ``huggingface_hub.CommitInfo`` of the upload commit.
    """
    stored = check_push(artifact_dir, repo_id)
    if not model_card:
        card_options = ("base_model", "speed_estimate")
        return upload_artifact(artifact_dir, repo_id, verified=stored,
                               **{k: v for k, v in push_options.items() if k not in card_options})
    model = family_named(stored.get("family", "decoder")).model_class.from_pretrained(artifact_dir)
    try:
        return model.push_to_hub(repo_id, **push_options)
    finally:
        model.release()
