"""Pushing a compiled pipeline or component to the Hub: its listed files and a model card with its buckets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from optimum_npu.hub.card import CardSection, build_model_card
from optimum_npu.hub.push import check_push, upload_artifact


def buckets_table(components: list[Any]) -> str:
    """The card's table of compiled components: each one's bucket graphs and reserved device memory."""
    rows = [f"| `{c.npu_name}` | {', '.join(f'`{g}`' for g in c._engine.graphs)} | "
            f"{sum(c._engine.memory.values()) / 2**20:.1f} MiB |" for c in components]
    return ("## Components and buckets\n\n| component | bucket graphs | device memory |\n|---|---|---|\n"
            + "\n".join(rows) + "\n")


def push_compiled(artifact: Path, repo_id: str, section: CardSection, components: list[Any], *,
                  token: str | None = None, private: bool | None = None, revision: str | None = None,
                  commit_message: str | None = None, commit_description: str | None = None,
                  base_model: str | None = None, model_card: bool = True) -> Any:
    """Uploads ``artifact`` (its listed files) with a card (``section`` + the buckets of ``components``);
    returns the ``huggingface_hub.CommitInfo`` of the upload commit."""
    verified = check_push(artifact, repo_id)
    card = None
    if model_card:
        card = str(build_model_card(artifact, section, repo_id=repo_id, base_model=base_model)) + "\n" + \
            buckets_table(components)
    return upload_artifact(artifact, repo_id, card_text=card, token=token, private=private, revision=revision,
                           commit_message=commit_message, commit_description=commit_description, verified=verified)
