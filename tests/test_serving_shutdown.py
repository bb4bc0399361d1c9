"""``optimum-npu serve`` as a process: SIGTERM lets the in-flight request finish, the process exits and the port
is released; a server that is draining answers 503."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2
import pytest

from serving_fixtures import ServerThread, free_port, served_pair  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


def test_draining_server_answers_503(served_pair):
    with ServerThread(served_pair.artifact, served_model_name="tiny") as server:
        server.server.engine.draining = True
        response = httpx2.post(f"{server.url}/v1/completions", json={"model": "tiny", "prompt": "x"})
        assert response.status_code == 503 and response.json()["error"]["code"] == "service_unavailable"
        assert httpx2.get(f"{server.url}/health").status_code == 200
        server.server.engine.draining = False
        assert httpx2.post(f"{server.url}/v1/completions", json={"model": "tiny", "prompt": "x"}).status_code == 200


@pytest.mark.slow
def test_sigterm_finishes_in_flight_and_releases_port(served_pair):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "optimum_npu.cli", "serve", str(served_pair.artifact),
                                "--port", str(port), "--served-model-name", "tiny", "--grace-period", "30"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx2.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                time.sleep(0.2)
        chunks: list[dict] = []
        started = threading.Event()

        def stream():
            body = {"model": "tiny", "prompt": "long", "max_tokens": 100, "temperature": 0, "stream": True,
                    "ignore_eos": True}
            with httpx2.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as response:
                for line in response.iter_lines():
                    if line.startswith("data: {"):
                        chunks.append(json.loads(line[6:]))
                        started.set()

        reader = threading.Thread(target=stream)
        reader.start()
        assert started.wait(60)
        process.send_signal(signal.SIGTERM)
        reader.join(60)
        assert process.wait(60) == 0
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"               # it finished in the grace period
        with pytest.raises(httpx2.ConnectError):                                   # nothing listens any more
            httpx2.get(f"{url}/health", timeout=5)
        with socket.socket() as sock:                                             # a new server can take the port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)             # (as uvicorn does)
            sock.bind(("127.0.0.1", port))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
