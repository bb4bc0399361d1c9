"""Shared serving fixtures: one compiled tiny Llama (decode buckets 1, 2, 4, 8) and a real server on loopback.

Import in a test module with ``from serving_fixtures import served_pair, ServerThread, CHAT_TEMPLATE  # noqa: F401``.
Each server loads its own copy of the artifact (its own device memory and KV pool), so the fixture's
``model.generate()`` computes expected outputs without sharing the server's KV cache.
"""

from __future__ import annotations

import socket
import httpx2
import pytest

from optimum_npu.serving.server import NPUServer, ServerOptions

#: The compile envelope of the served model: 8 rows, decode buckets 1/2/4/8, blocks of 16 tokens.
SERVING_NPU = {"batch_size": 8, "decoder_batch_sizes": [1, 2, 4, 8], "kvcache_block_size": 16}
CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


@pytest.fixture(scope="session")
def served_pair(make_compiled):
    """The compiled tiny Llama every serving test shares (artifact + reloaded model + eager reference)."""
    return make_compiled("LlamaForCausalLM", npu_overrides=SERVING_NPU)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerThread:
    """``optimum-npu serve`` on 127.0.0.1 in a thread (uvicorn, the engine thread, the real app)."""

    def __init__(self, artifact, **options):
        self.port = free_port()
        options.setdefault("chat_template", CHAT_TEMPLATE)
        self.server = NPUServer(artifact, ServerOptions(port=self.port, log_level="warning", **options))
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "ServerThread":
        self.thread = self.server.start_background()
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop()
        assert not self.thread.is_alive(), "the server did not shut down"

    def metric(self, name: str, headers: dict | None = None) -> float:
        """The value of one un-labelled-beyond-model_name sample of /metrics."""
        text = httpx2.get(f"{self.url}/metrics", headers=headers).text
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        raise KeyError(f"{name} not in /metrics")
