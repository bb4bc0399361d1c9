"""A local Hub-compatible HTTP server for the tests (FastAPI + uvicorn on 127.0.0.1).

It implements the subset of the Hugging Face Hub HTTP API that ``huggingface_hub``'s
``create_repo``, ``create_branch``, ``upload_folder`` / ``create_commit`` / ``delete_folder``,
``repo_info``, ``list_repo_files`` / ``list_repo_tree``, ``list_repo_commits``,
``list_repo_refs``, ``hf_hub_download`` and ``snapshot_download`` use:

- ``POST /api/repos/create``, ``POST /api/validate-yaml``
- ``POST /api/models/{repo}/preupload/{rev}`` (every file is a *regular* upload, so the client
  sends contents base64 in the commit and needs neither LFS nor Xet)
- ``POST /api/models/{repo}/commit/{rev}`` (NDJSON: header, file, deletedFile, deletedFolder)
- ``POST /api/models/{repo}/branch/{branch}``, ``GET .../refs``, ``GET .../commits/{rev}``
- ``GET /api/models/{repo}[/revision/{rev}]``, ``GET .../tree/{rev}[/{path}]``
- ``GET|HEAD /{repo}/resolve/{rev}/{path}`` with ``ETag`` (git blob sha1), ``X-Repo-Commit``
  and ``Content-Length``.

Auth: one token (``TOKEN``) may write and read everything. A request carrying any other
token is refused with 401; without a token, public repos can be read and nothing written.
Every request is recorded in ``HubServer.requests`` so tests can check what the client sent.
Blobs live content-addressed in a directory on disk. Branch names must not contain ``/``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response

TOKEN = "hf_optimum_npu_test_token"


class HubError(Exception):
    """An HTTP error with the Hub's ``X-Error-Code`` / ``X-Error-Message`` headers."""

    def __init__(self, status: int, message: str, code: str | None = None, **body):
        super().__init__(message)
        self.status, self.message, self.code, self.body = status, message, code, body


@dataclass
class Commit:
    sha: str
    title: str
    message: str
    files: dict[str, str]  # path -> blob sha256
    date: str


@dataclass
class Repo:
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    history: dict[str, list[str]] = field(default_factory=dict)  # branch -> commit shas, newest first

    def resolve(self, revision: str) -> Commit:
        sha = self.branches.get(revision, revision)
        if sha not in self.commits:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return self.commits[sha]


class HubState:
    """Repositories, commits and blobs of the test Hub (thread-safe)."""

    def __init__(self, root: Path):
        self.blob_dir = root / "blobs"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.repos: dict[str, Repo] = {}
        self.git_oids: dict[str, str] = {}  # blob sha256 -> git blob sha1 (the Hub's ETag of a regular file)
        self.lock = threading.Lock()

    def repo(self, repo_id: str, authorized: bool) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not authorized):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def put_blob(self, content: bytes) -> str:
        sha = hashlib.sha256(content).hexdigest()
        path = self.blob_dir / sha
        if not path.exists():
            path.write_bytes(content)
            self.git_oids[sha] = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
        return sha

    def commit(self, repo: Repo, branch: str, title: str, description: str, files: dict[str, str]) -> Commit:
        date = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        parent = repo.branches.get(branch, "")
        payload = json.dumps([parent, title, description, sorted(files.items()), date, time.perf_counter_ns()])
        sha = hashlib.sha1(payload.encode()).hexdigest()
        message = title + (f"\n\n{description}" if description else "")
        repo.commits[sha] = Commit(sha, title, message, files, date)
        repo.branches[branch] = sha
        repo.history.setdefault(branch, []).insert(0, sha)
        return repo.commits[sha]


class HubServer:
    """Runs the app with uvicorn in a daemon thread on a free loopback port."""

    def __init__(self, root: Path):
        self.state = HubState(root)
        self.requests: list[dict] = []
        port = _free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(create_app(self), host="127.0.0.1", port=port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="test-hub")

    def start(self) -> "HubServer":
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test Hub server did not start within 10 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _authorized(request: Request, *, write: bool) -> bool:
    """True with the valid token, False without any; a wrong token is a 401 (as on the Hub)."""
    header = request.headers.get("authorization")
    if header is None:
        if write:
            raise HubError(401, "You must be authenticated to write")
        return False
    if header != f"Bearer {TOKEN}":
        raise HubError(401, "Invalid credentials in Authorization header")
    return True


def create_app(server: HubServer) -> FastAPI:
    app = FastAPI()
    state = server.state

    @app.middleware("http")
    async def record(request: Request, call_next):
        server.requests.append({"method": request.method, "path": request.url.path,
                                "authorization": request.headers.get("authorization")})
        return await call_next(request)

    @app.exception_handler(HubError)
    async def hub_error(request: Request, err: HubError):
        headers = {"X-Error-Message": err.message, **({"X-Error-Code": err.code} if err.code else {})}
        return JSONResponse({"error": err.message, **err.body}, status_code=err.status, headers=headers)

    @app.post("/api/repos/create")
    async def create_repo(request: Request):
        _authorized(request, write=True)
        body = await request.json()
        if body.get("type", "model") != "model":
            raise HubError(400, "this test Hub only hosts model repos")
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        with state.lock:
            if repo_id in state.repos:
                raise HubError(409, "You already created this model repo", url=f"{server.endpoint}/{repo_id}")
            private = body.get("visibility") == "private" or bool(body.get("private"))
            repo = state.repos[repo_id] = Repo(repo_id, private)
            state.commit(repo, "main", "initial commit", "", {})
        return {"url": f"{server.endpoint}/{repo_id}", "name": repo_id, "id": repo_id}

    @app.post("/api/validate-yaml")
    async def validate_yaml():
        return {"errors": [], "warnings": []}

    @app.post("/api/models/{ns}/{name}/preupload/{revision}")
    async def preupload(ns: str, name: str, revision: str, request: Request):
        repo = state.repo(f"{ns}/{name}", _authorized(request, write=True))
        files = repo.resolve(revision).files
        body = await request.json()
        return {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                           "oid": state.git_oids.get(files.get(f["path"], ""))} for f in body["files"]]}

    @app.post("/api/models/{ns}/{name}/commit/{revision}")
    async def commit(ns: str, name: str, revision: str, request: Request):
        repo = state.repo(f"{ns}/{name}", _authorized(request, write=True))
        if request.query_params.get("create_pr"):
            raise HubError(400, "pull requests are not supported by this test Hub")
        lines = [json.loads(line) for line in (await request.body()).splitlines() if line.strip()]
        with state.lock:
            files = dict(repo.resolve(revision).files)
            if revision not in repo.branches:
                raise HubError(400, f"can only commit to a branch, not {revision!r}")
            header = {}
            for item in lines:
                key, value = item["key"], item["value"]
                if key == "header":
                    header = value
                elif key == "file":
                    files[value["path"]] = state.put_blob(base64.b64decode(value["content"]))
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: b for p, b in files.items() if not p.startswith(prefix)}
                else:
                    raise HubError(400, f"unsupported commit operation {key!r}: this test Hub takes regular uploads")
            new = state.commit(repo, revision, header.get("summary", ""), header.get("description", ""), files)
        return {"commitUrl": f"{server.endpoint}/{repo.repo_id}/commit/{new.sha}", "commitOid": new.sha,
                "success": True, "pullRequestUrl": None}

    @app.post("/api/models/{ns}/{name}/branch/{branch}")
    async def create_branch(ns: str, name: str, branch: str, request: Request):
        repo = state.repo(f"{ns}/{name}", _authorized(request, write=True))
        body = await request.json() if await request.body() else {}
        with state.lock:
            if branch in repo.branches:
                raise HubError(409, f"Branch {branch} already exists")
            start = repo.resolve(body.get("startingPoint") or "main")
            repo.branches[branch] = start.sha
            repo.history[branch] = [start.sha]
        return {}

    @app.get("/api/models/{ns}/{name}/refs")
    async def refs(ns: str, name: str, request: Request):
        repo = state.repo(f"{ns}/{name}", _authorized(request, write=False))
        branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": sha} for b, sha in repo.branches.items()]
        return {"branches": branches, "tags": [], "converts": [], "pullRequests": []}

    @app.get("/api/models/{ns}/{name}/commits/{revision}")
    async def commits(ns: str, name: str, revision: str, request: Request):
        repo = state.repo(f"{ns}/{name}", _authorized(request, write=False))
        shas = repo.history.get(revision) or [repo.resolve(revision).sha]
        return [{"id": sha, "title": repo.commits[sha].title, "message": repo.commits[sha].message,
                 "authors": [{"user": "tester"}], "date": repo.commits[sha].date} for sha in shas]

    @app.get("/api/models/{ns}/{name}")
    @app.get("/api/models/{ns}/{name}/revision/{revision}")
    async def model_info(ns: str, name: str, request: Request, revision: str = "main"):
        repo = state.repo(f"{ns}/{name}", _authorized(request, write=False))
        commit = repo.resolve(revision)
        return {"id": repo.repo_id, "modelId": repo.repo_id, "sha": commit.sha, "private": repo.private,
                "lastModified": commit.date, "siblings": [{"rfilename": p} for p in sorted(commit.files)]}

    @app.get("/api/models/{ns}/{name}/tree/{revision}")
    @app.get("/api/models/{ns}/{name}/tree/{revision}/{path:path}")
    async def tree(ns: str, name: str, revision: str, request: Request, path: str = ""):
        repo = state.repo(f"{ns}/{name}", _authorized(request, write=False))
        recursive = request.query_params.get("recursive", "false").lower() == "true"
        return _tree_entries(state, repo.resolve(revision).files, path.strip("/"), recursive)

    @app.api_route("/{ns}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
    async def resolve(ns: str, name: str, revision: str, path: str, request: Request):
        repo = state.repo(f"{ns}/{name}", _authorized(request, write=False))
        commit = repo.resolve(revision)
        if path not in commit.files:
            raise HubError(404, f"{path} does not exist at {revision}", "EntryNotFound")
        blob = commit.files[path]
        headers = {"ETag": f'"{state.git_oids[blob]}"', "X-Repo-Commit": commit.sha}
        if request.method == "HEAD":
            size = (state.blob_dir / blob).stat().st_size
            return Response(headers={**headers, "Content-Length": str(size)})
        return FileResponse(state.blob_dir / blob, headers=headers)

    return app


def _tree_entries(state: HubState, files: dict[str, str], base: str, recursive: bool) -> list[dict]:
    """The Hub's tree listing: files and folders under ``base`` (direct children unless ``recursive``)."""
    prefix = f"{base}/" if base else ""
    entries, folders = [], set()
    for path, blob in sorted(files.items()):
        if not path.startswith(prefix):
            continue
        parts = path[len(prefix):].split("/")
        for depth in range(1, len(parts)):
            if recursive or depth == 1:
                folders.add(prefix + "/".join(parts[:depth]))
        if recursive or len(parts) == 1:
            size = (state.blob_dir / blob).stat().st_size
            entries.append({"type": "file", "path": path, "size": size, "oid": state.git_oids[blob]})
    entries += [{"type": "directory", "path": f, "size": 0, "oid": hashlib.sha1(f.encode()).hexdigest()}
                for f in sorted(folders)]
    return entries

