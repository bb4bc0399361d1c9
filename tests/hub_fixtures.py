"""pytest fixtures around the test Hub: import them into a test module with
``from hub_fixtures import hub, hub_server  # noqa: F401`` (fixtures are found by name)."""

from __future__ import annotations

import pytest

from hub_server import HubServer

_repo_counter = iter(range(1_000_000))


@pytest.fixture(scope="module")
def hub_server(tmp_path_factory):
    """A test Hub on loopback for the module."""
    server = HubServer(tmp_path_factory.mktemp("test-hub")).start()
    yield server
    server.stop()


@pytest.fixture
def hub(hub_server, monkeypatch, tmp_path):
    """Points ``huggingface_hub`` at the test Hub; HF cache and token file in ``tmp_path``, no HF_TOKEN.

    ``huggingface_hub`` reads ``HF_ENDPOINT`` / ``HF_HUB_OFFLINE`` / ``HF_HUB_CACHE`` into
    ``constants`` at import time, so the constants are patched as well as the environment
    (subprocesses read the environment).
    """
    from huggingface_hub import constants

    endpoint = hub_server.endpoint
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-stored-token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-stored-token"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return hub_server


def new_repo_id(prefix: str = "npu") -> str:
    """A repository id not used before in this process."""
    return f"test-org/{prefix}-{next(_repo_counter)}"
