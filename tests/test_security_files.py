"""Issue #9, artifact files: an attacker who controls every byte of an artifact or of a compile-cache
entry (and re-signs the manifest with ``write_manifest``) cannot make optimum-npu read, copy, upload
or delete anything outside the files the manifest lists, nor swap the weights behind a cache key.

Each test builds the malicious artifact from a tiny model compiled once per module, and checks
both the refusal (a clear message) and the absence of side effects."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch
from hub_fixtures import hub, hub_server, new_repo_id  # noqa: F401  (fixtures)
from hub_server import TOKEN

import optimum_npu.compile.weights as weights_module
from tampering import resign, swap_weights

from optimum_npu import ArtifactError, NPUModelForCausalLM, SaveTargetError
from optimum_npu.cli import main
from optimum_npu.compile.artifact import sha256_file, verify_artifact
from optimum_npu import push_artifact
from optimum_npu.hub import CompileCache
from optimum_npu.models.tiny import save_causal_lm
from optimum_npu.schema import MANIFEST_FILE

NPU = {"max_seq_len": 64, "batch_size": 2, "decoder_batch_sizes": [1, 2], "prefill_chunk_size": 16}
PROMPT = torch.tensor([[1, 40, 41, 42, 43]])


def greedy(model) -> list[list[int]]:
    return model.generate(PROMPT, attention_mask=torch.ones_like(PROMPT), max_new_tokens=6, do_sample=False).tolist()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_causal_lm(tmp_path_factory.mktemp("hf") / "ckpt", "LlamaForCausalLM")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory, checkpoint):
    """(saved artifact, its greedy tokens), compiled once without the cache."""
    model = NPUModelForCausalLM.from_pretrained(checkpoint, export=True, npu_config=NPU, compile_cache=False)
    try:
        saved = tmp_path_factory.mktemp("saved") / "artifact"
        model.save_pretrained(saved)
        return saved, greedy(model)
    finally:
        model.release()


@pytest.fixture
def copy(compiled, tmp_path) -> Path:
    return Path(shutil.copytree(compiled[0], tmp_path / "copy"))


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "outside" / "secret.txt"
    path.parent.mkdir()
    path.write_text("API_KEY=hunter2")
    return path


@pytest.fixture
def weight_reads(monkeypatch) -> list[str]:
    """Paths of every safetensors file opened (the loader's only way to read weights)."""
    opened = []
    real = weights_module.safe_open
    monkeypatch.setattr(weights_module, "safe_open", lambda path, **kw: opened.append(path) or real(path, **kw))
    return opened


def refused(path, match: str) -> str:
    with pytest.raises(ArtifactError) as err:
        NPUModelForCausalLM.from_pretrained(path)
    message = str(err.value)
    assert match in message and "re-download or recompile" in message, message
    return message


def listing(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---- (a) everything the loader reads is listed ------------------------------------------------------
def test_unlisted_swapped_weights_are_refused_never_read(copy, weight_reads):
    swap_weights(copy / "model.safetensors")
    resign(copy, drop=("model.safetensors",))
    refused(copy, "model.safetensors is missing from the artifact (not listed in npu_manifest.json)")
    assert weight_reads == []


@pytest.mark.parametrize("name", ["config.json", "npu_config.json", "graphs/prefill.graph.json"])
def test_unlisted_file_the_loader_reads_is_refused(copy, name, weight_reads):
    resign(copy, drop=(name,))
    with pytest.raises(ArtifactError, match="not listed in npu_manifest.json|not in the manifest") as err:
        NPUModelForCausalLM.from_pretrained(copy)
    assert name in str(err.value) and weight_reads == []


def test_unlisted_generation_config_is_refused(copy):
    resign(copy, drop=("generation_config.json",))
    refused(copy, "generation_config.json is present but not listed in npu_manifest.json")


# ---- (b) manifest paths stay inside the artifact ------------------------------------------------------
@pytest.mark.parametrize("rel, why", [
    ("../outside/secret.txt", "leaves the artifact (..)"), ("graphs/../../outside/secret.txt", "leaves the artifact"),
    ("ABSOLUTE", "is absolute"), ("graphs\\x.json", "contains a backslash"), ("./config.json", "not normalised"),
    ("graphs//x.json", "not normalised"), (MANIFEST_FILE, "is the manifest itself"),
])
def test_manifest_path_outside_the_artifact_is_refused(copy, secret, rel, why, weight_reads):
    rel = str(secret) if rel == "ABSOLUTE" else rel
    resign(copy, extra={rel: {"sha256": sha256_file(secret), "size": secret.stat().st_size}})
    message = refused(copy, why)
    assert repr(rel) in message and weight_reads == []


@pytest.mark.parametrize("entry, why", [
    ({"sha256": "0" * 63, "size": 1}, "64 lowercase hex"), ({"sha256": "A" * 64, "size": 1}, "64 lowercase hex"),
    ({"sha256": "0" * 64, "size": -1}, "non-negative integer"), ({"sha256": "0" * 64, "size": True}, "integer"),
    ({"sha256": "0" * 64}, "must be exactly"), ("x", "must be exactly"),
])
def test_manifest_entries_are_validated_as_data(copy, entry, why):
    resign(copy, extra={"config.json": entry})
    refused(copy, why)


def test_manifest_with_too_many_files_is_refused(copy):
    resign(copy, extra={f"f{i}": {"sha256": "0" * 64, "size": 0} for i in range(10_001)})
    refused(copy, "lists 10")


# ---- (c) no symbolic links --------------------------------------------------------------------------------
def test_unlisted_symlink_is_refused(copy, secret, weight_reads):
    (copy / "notes.txt").symlink_to(secret)
    refused(copy, "notes.txt is a symbolic link")
    assert weight_reads == []


def test_listed_symlink_to_a_secret_is_refused(copy, secret, weight_reads):
    (copy / "tokenizer.json").unlink()
    (copy / "tokenizer.json").symlink_to(secret)  # the attacker knows the secret's digest, or guesses it
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    manifest["files"]["tokenizer.json"] = {"sha256": sha256_file(secret), "size": secret.stat().st_size}
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    refused(copy, "tokenizer.json is a symbolic link")
    assert weight_reads == []


def test_symlinked_folder_is_refused(copy, secret):
    (copy / "extra").symlink_to(secret.parent, target_is_directory=True)
    refused(copy, "extra is a symbolic link")


def test_save_and_push_never_follow_a_symlink(compiled, copy, secret, tmp_path, hub):
    model = NPUModelForCausalLM.from_pretrained(copy)
    try:
        (copy / "secret.txt").symlink_to(secret)  # planted after loading
        with pytest.raises(ArtifactError, match="secret.txt is a symbolic link"):
            model.save_pretrained(tmp_path / "saved")
        assert not (tmp_path / "saved").exists()
        repo = new_repo_id("symlink")
        with pytest.raises(ArtifactError, match="secret.txt is a symbolic link"):
            push_artifact(copy, repo, token=TOKEN, model_card=False)
        assert not any(repo in r["path"] for r in hub.requests)  # nothing was sent, not even create_repo
    finally:
        model.release()


# ---- (d) unlisted files are never copied or uploaded ------------------------------------------------------
def test_unlisted_dotenv_is_neither_saved_nor_pushed(compiled, copy, tmp_path, hub):
    (copy / ".env").write_text("HF_TOKEN=hf_secret")
    (copy / "graphs" / "notes.md").write_text("not part of the artifact")
    listed = set(json.loads((copy / MANIFEST_FILE).read_text())["files"]) | {MANIFEST_FILE}
    model = NPUModelForCausalLM.from_pretrained(copy)  # unlisted files are ignored, not refused
    try:
        model.save_pretrained(tmp_path / "saved")
        assert set(listing(tmp_path / "saved")) == listed
        repo = new_repo_id("dotenv")
        model.push_to_hub(repo, token=TOKEN, speed_estimate=False)
        from huggingface_hub import HfApi

        assert set(HfApi(token=TOKEN).list_repo_files(repo)) == listed | {"README.md"}
        assert greedy(model) == compiled[1]
    finally:
        model.release()


# ---- (e) save_pretrained never deletes what it did not write -------------------------------------------------
def test_save_into_non_artifact_dir_is_refused_and_untouched(compiled, tmp_path, monkeypatch):
    model = NPUModelForCausalLM.from_pretrained(compiled[0])
    try:
        project = tmp_path / "project"
        (project / "src").mkdir(parents=True)
        (project / "src" / "main.py").write_text("print('hello')")
        (project / ".env").write_text("KEY=1")
        before = listing(project)
        with pytest.raises(SaveTargetError) as err:
            model.save_pretrained(project)
        message = str(err.value)
        assert str(project) in message and "not empty" in message and "no npu_manifest.json" in message
        assert "new or empty directory" in message and listing(project) == before
        monkeypatch.chdir(project / "src")
        for target in (".", ".."):
            with pytest.raises(SaveTargetError, match="current working directory"):
                model.save_pretrained(target)
        assert listing(project) == before and sorted(p.name for p in tmp_path.iterdir()) == ["project"]
    finally:
        model.release()


def test_save_replaces_an_artifact_and_cleans_leftovers(compiled, tmp_path):
    model = NPUModelForCausalLM.from_pretrained(compiled[0])
    try:
        target = tmp_path / "target"
        model.save_pretrained(target)
        stale = [tmp_path / ".target.tmp-abcd_123", tmp_path / ".target.old-zz9y8x7w"]
        keep = [tmp_path / ".target.tmp-mine", tmp_path / ".other.tmp-abcd_123", tmp_path / "target.tmp-abcd_123"]
        for path in stale + keep:
            (path / "artifact").mkdir(parents=True)
        model.save_pretrained(target)  # replaces the existing artifact
        verify_artifact(target)
        assert not any(p.exists() for p in stale) and all(p.exists() for p in keep)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["target"] + [p.name for p in keep])
    finally:
        model.release()


def test_cache_clear_removes_only_its_own_leftovers(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    ours = [root / ".0123456789abcdef.tmp-abcd_123", root / ".pull-x1y2z3w4"]
    others = [root / ".pull-mine", root / "notes", root / ".0123.tmp-abcd_123"]
    for path in ours + others:
        path.mkdir(parents=True)
    (root / "README.txt").write_text("kept")
    monkeypatch.setenv("OPTIMUM_NPU_CACHE", str(root))
    assert main(["cache", "clear", "--all"]) == 0
    assert not any(p.exists() for p in ours) and all(p.exists() for p in others)
    assert (root / "README.txt").read_text() == "kept"


# ---- (f) a poisoned compile-cache entry never swaps weights --------------------------------------------------
def _export(checkpoint, cache, npu=NPU):
    return NPUModelForCausalLM.from_pretrained(checkpoint, export=True, npu_config=dict(npu), compile_cache=cache)


def _poison(entry_artifact: Path, weights: str = "model.safetensors") -> None:
    swap_weights(entry_artifact / weights)
    resign(entry_artifact)
    verify_artifact(entry_artifact)  # the re-signed entry passes every manifest check


def _assert_recompiled(caplog, checkpoint, cache, clean_tokens, npu=NPU):
    caplog.clear()
    model = _export(checkpoint, cache, npu)
    try:
        assert "is not the compile asked for" in caplog.text and "differs from the model being compiled" in caplog.text
        assert "compile cache miss" in caplog.text and greedy(model) == clean_tokens
    finally:
        model.release()


@pytest.mark.slow
@pytest.mark.parametrize("tp", [1, 2])
def test_poisoned_cache_entry_is_detected_and_recompiled(checkpoint, compiled, tmp_path, caplog, tp):
    caplog.set_level(logging.INFO, logger="optimum_npu.hub.cache")
    npu = {**NPU, "tensor_parallel_size": tp}
    cache = CompileCache(tmp_path / "cache")
    clean = _export(checkpoint, cache, npu)
    try:
        clean_tokens = greedy(clean)
    finally:
        clean.release()
    (entry,) = cache.entries()
    artifact = cache.artifact_dir(entry["key"])
    entry_json = (cache.entry_dir(entry["key"]) / "entry.json").read_bytes()
    _poison(artifact, "model.safetensors" if tp == 1 else "model-tp1-of-2.safetensors")
    poisoned = NPUModelForCausalLM.from_pretrained(artifact)
    try:
        assert greedy(poisoned) != clean_tokens  # the attack is real: these weights change the output
    finally:
        poisoned.release()
    _assert_recompiled(caplog, checkpoint, cache, clean_tokens, npu)
    (entry,) = cache.entries()  # the poisoned entry was replaced by the recompiled one
    assert (cache.entry_dir(entry["key"]) / "entry.json").read_bytes() != entry_json


@pytest.mark.slow
def test_poisoned_shared_cache_entry_is_detected_and_recompiled(checkpoint, compiled, tmp_path, caplog, hub,
                                                                monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    caplog.set_level(logging.INFO, logger="optimum_npu.hub.cache")
    cache = CompileCache(tmp_path / "cache")
    clean = _export(checkpoint, cache)
    try:
        clean_tokens = greedy(clean)
    finally:
        clean.release()
    (entry,) = cache.entries()
    key = entry["key"]
    (cache.artifact_dir(key) / ".env").write_text("HF_TOKEN=hf_secret")  # unlisted: never uploaded
    repo = new_repo_id("shared-cache")
    assert main(["cache", "push", "--cache-dir", str(cache.root), "--repo-id", repo, "--private"]) == 0
    from huggingface_hub import HfApi

    files = HfApi().list_repo_files(repo)
    assert f"{key}/artifact/model.safetensors" in files and not any(f.endswith(".env") for f in files)

    poisoned = Path(shutil.copytree(cache.artifact_dir(key), tmp_path / "poisoned"))
    _poison(poisoned)
    HfApi().upload_folder(repo_id=repo, folder_path=poisoned, path_in_repo=f"{key}/artifact",
                          commit_message="poison")
    cache.clear()
    _assert_recompiled(caplog, checkpoint, CompileCache(tmp_path / "cache", repo_id=repo), clean_tokens)
    assert "compile cache hit" not in caplog.text
