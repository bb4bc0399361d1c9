"""Push and pull compiled artifacts through the real ``huggingface_hub`` client, over HTTP on
loopback, against the local Hub-compatible test server (``hub_server.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from hub_fixtures import hub, hub_server, new_repo_id  # noqa: F401  (fixtures)
from hub_server import TOKEN

from optimum_npu import ArtifactError, NPUModelForCausalLM
from optimum_npu.cli import main
from optimum_npu.device.memory import format_bytes
from optimum_npu import push_artifact
from optimum_npu.hub import HubPushError
from optimum_npu.models.base import HubDownloadError
from optimum_npu.models.tiny import save_causal_lm
from optimum_npu.schema import MANIFEST_FILE

NPU = {"max_seq_len": 64, "batch_size": 2, "decoder_batch_sizes": [1, 2], "prefill_chunk_size": 16}
PROMPTS = torch.tensor([[1, 40, 41, 42, 43], [1, 50, 51, 52, 53]])


def greedy(model) -> list[list[int]]:
    return model.generate(PROMPTS, attention_mask=torch.ones_like(PROMPTS), max_new_tokens=6,
                          do_sample=False).tolist()


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """A tiny Llama compiled (cache off), saved and reloaded; ``variant`` has another batch size."""
    root = tmp_path_factory.mktemp("hub-models")
    checkpoint = save_causal_lm(root / "ckpt", "LlamaForCausalLM")
    model = NPUModelForCausalLM.from_pretrained(checkpoint, export=True, npu_config=NPU, compile_cache=False)
    model.save_pretrained(root / "artifact")
    variant = NPUModelForCausalLM.from_pretrained(checkpoint, export=True, compile_cache=False,
                                                  npu_config={**NPU, "batch_size": 1, "decoder_batch_sizes": [1]})
    variant.save_pretrained(root / "variant")
    variant.release()
    yield {"model": model, "dir": root / "artifact", "variant_dir": root / "variant", "checkpoint": checkpoint}
    model.release()


def test_push_pull_generate_round_trip(compiled, hub, tmp_path):
    repo = new_repo_id("roundtrip")
    model = compiled["model"]
    info = model.push_to_hub(repo, token=TOKEN, private=True, base_model="test-org/tiny-llama")
    api = HfApi(token=TOKEN)
    manifest = json.loads((compiled["dir"] / MANIFEST_FILE).read_text())["files"]
    assert set(api.list_repo_files(repo)) == set(manifest) | {MANIFEST_FILE, "README.md"}
    assert api.repo_info(repo).private is True
    assert api.list_repo_commits(repo)[0].title == "Upload LlamaForCausalLM compiled for atom with optimum-npu"
    assert api.list_repo_commits(repo)[0].commit_id == info.oid
    assert {r["authorization"] for r in hub.requests if repo in r["path"]} == {f"Bearer {TOKEN}"}

    card = ModelCard.load(repo, token=TOKEN)
    assert card.data.base_model == "test-org/tiny-llama" and card.data.library_name == "optimum-npu"
    assert {"optimum-npu", "npu-atom", "llama"} <= set(card.data.tags) and card.data.pipeline_tag == "text-generation"
    assert "| `max_seq_len` | `64` |" in card.text and "`decoder_batch_1`, `decoder_batch_2`" in card.text
    assert "## Target NPU: `atom`" in card.text and "| DRAM | 14.90 GiB |" in card.text
    assert f"| weights | {format_bytes(model.npu_stats.memory['weights'])} |" in card.text
    assert "| 1 | " in card.text and "| 2 | " in card.text and "not from a measurement on hardware" in card.text

    pulled = NPUModelForCausalLM.from_pretrained(repo, token=TOKEN, cache_dir=tmp_path / "pull-cache")
    assert str(pulled.artifact_dir).startswith(str(tmp_path / "pull-cache"))
    assert greedy(pulled) == greedy(model)


def test_tokens_and_visibility(compiled, hub, tmp_path):
    repo = new_repo_id("private")
    push_artifact(compiled["dir"], repo, token=TOKEN, private=True, speed_estimate=False)
    with pytest.raises(HubDownloadError, match="RepositoryNotFoundError"):  # private: no token, no access
        NPUModelForCausalLM.from_pretrained(repo, cache_dir=tmp_path / "c1")
    with pytest.raises(HubDownloadError, match="HfHubHTTPError.*Invalid credentials in Authorization header"):
        NPUModelForCausalLM.from_pretrained(repo, token="hf_wrong", cache_dir=tmp_path / "c2")
    with pytest.raises(HubPushError, match="401: the token is missing or invalid.*set HF_TOKEN"):
        push_artifact(compiled["dir"], new_repo_id(), token="hf_wrong", speed_estimate=False)

    public = new_repo_id("public")
    push_artifact(compiled["dir"], public, token=TOKEN, private=False, speed_estimate=False)
    assert HfApi(token=TOKEN).repo_info(public).private is False
    anonymous = NPUModelForCausalLM.from_pretrained(public, cache_dir=tmp_path / "c3")
    assert anonymous.npu_graphs == compiled["model"].npu_graphs


def test_branches_commit_messages_and_revision_pinning(compiled, hub, tmp_path):
    repo = new_repo_id("revisions")
    main_commit = push_artifact(compiled["dir"], repo, token=TOKEN, speed_estimate=False).oid
    push_artifact(compiled["variant_dir"], repo, token=TOKEN, revision="batch-1", commit_message="batch 1 only",
                  speed_estimate=False)
    api = HfApi(token=TOKEN)
    assert {b.name for b in api.list_repo_refs(repo).branches} == {"main", "batch-1"}
    assert api.list_repo_commits(repo, revision="batch-1")[0].title == "batch 1 only"

    on_branch = NPUModelForCausalLM.from_pretrained(repo, revision="batch-1", token=TOKEN, cache_dir=tmp_path)
    assert on_branch.npu_config.batch_size == 1 and on_branch.npu_graphs == ["prefill", "decoder_batch_1"]
    push_artifact(compiled["variant_dir"], repo, token=TOKEN, speed_estimate=False)  # main moves on
    pinned = NPUModelForCausalLM.from_pretrained(repo, revision=main_commit, token=TOKEN, cache_dir=tmp_path)
    assert pinned.npu_config.batch_size == 2
    assert NPUModelForCausalLM.from_pretrained(repo, token=TOKEN, cache_dir=tmp_path).npu_config.batch_size == 1


@pytest.mark.slow
def test_offline_and_local_files_only_use_the_download_cache(compiled, hub, monkeypatch, tmp_path):
    from huggingface_hub import constants

    repo = new_repo_id("offline")
    push_artifact(compiled["dir"], repo, token=TOKEN, speed_estimate=False)
    first = NPUModelForCausalLM.from_pretrained(repo, token=TOKEN)  # into HF_HUB_CACHE (tmp)
    seen = len(hub.requests)
    again = NPUModelForCausalLM.from_pretrained(repo, local_files_only=True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    offline = NPUModelForCausalLM.from_pretrained(repo)
    assert len(hub.requests) == seen  # nothing went over the network
    assert again.artifact_dir == offline.artifact_dir == first.artifact_dir
    with pytest.raises(HubDownloadError, match="LocalEntryNotFoundError.*HF_HUB_OFFLINE"):
        NPUModelForCausalLM.from_pretrained(new_repo_id("never-downloaded"))

    # HF_HUB_OFFLINE=1 in the environment of a fresh process: the CLI generates from the cache alone
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "optimum_npu.cli", "generate", repo, "--prompt", "Hi",
                             "--max-new-tokens", "3"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "--- prompt: 'Hi'" in result.stdout and len(hub.requests) == seen


def test_tampered_or_incomplete_repo_is_refused(compiled, hub, tmp_path):
    repo = new_repo_id("tampered")
    push_artifact(compiled["dir"], repo, token=TOKEN, speed_estimate=False)
    with pytest.raises(ValueError, match="already a compiled optimum-npu artifact; load it without export=True"):
        NPUModelForCausalLM.from_pretrained(repo, export=True, token=TOKEN, cache_dir=tmp_path / "c0")
    api = HfApi(token=TOKEN)
    graph = (compiled["dir"] / "graphs" / "prefill.graph.json").read_text()
    api.upload_file(path_or_fileobj=graph.replace('"prefill"', '"prefilm"', 1).encode(),  # same size
                    path_in_repo="graphs/prefill.graph.json", repo_id=repo, commit_message="edit a graph")
    with pytest.raises(ArtifactError, match="prefill.graph.json does not match its sha256"):
        NPUModelForCausalLM.from_pretrained(repo, token=TOKEN, cache_dir=tmp_path / "c1")
    api.delete_file(MANIFEST_FILE, repo_id=repo)
    with pytest.raises(ArtifactError, match="without its npu_manifest.json, so its files cannot be verified"):
        NPUModelForCausalLM.from_pretrained(repo, token=TOKEN, cache_dir=tmp_path / "c2")


def test_push_refuses_an_unverified_artifact_before_any_request(compiled, hub, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(compiled["dir"], broken)
    (broken / "graphs" / "prefill.graph.json").write_text("{}")
    seen = len(hub.requests)
    with pytest.raises(ArtifactError, match="prefill.graph.json is 2 bytes but the manifest says"):
        push_artifact(broken, new_repo_id(), token=TOKEN)
    with pytest.raises(ArtifactError, match="not a compiled optimum-npu artifact"):
        push_artifact(compiled["checkpoint"], new_repo_id(), token=TOKEN)
    with pytest.raises(ValueError, match="repo_id='no-namespace' must be 'namespace/name'"):
        push_artifact(compiled["dir"], "no-namespace", token=TOKEN)
    assert len(hub.requests) == seen


def test_push_command_uses_hf_token_from_environment(compiled, hub, monkeypatch, capsys):
    repo = new_repo_id("cli")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert main(["push", str(compiled["dir"]), repo, "--revision", "dev", "--commit-message", "from the CLI",
                 "--no-speed-estimate", "--base-model", "test-org/base"]) == 0
    assert f"pushed {compiled['dir']} to {repo} (dev)" in capsys.readouterr().out
    api = HfApi()
    assert api.list_repo_commits(repo, revision="dev")[0].title == "from the CLI"
    assert "README.md" in api.list_repo_files(repo, revision="dev")
    assert "README.md" not in api.list_repo_files(repo)  # main untouched: only the initial commit
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    assert main(["push", str(compiled["dir"]), new_repo_id(), "--no-speed-estimate"]) == 2
    assert "401: the token is missing or invalid" in capsys.readouterr().err
