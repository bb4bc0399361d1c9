"""The compile cache: hits instead of recompiles, a documented content key, corrupt entries
recompiled, switching it off, the ``cache`` command, and a Hub repository as a shared cache."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time

import pytest
import torch
from hub_fixtures import hub, hub_server, new_repo_id  # noqa: F401  (fixtures)
from hub_server import TOKEN

from optimum_npu import NPUDecoderConfig, NPUModelForCausalLM
from optimum_npu.cli import main
from optimum_npu.compile.artifact import ArtifactError, verify_artifact
from optimum_npu.hub import CompileCache, remote_cache
from optimum_npu.hub.cache_key import KEY_VERSION, canonical_json
from optimum_npu.models.decoder.cache_key import decoder_cache_key
from optimum_npu.models.model_config import DecoderModelConfig
from optimum_npu.models.tiny import build_causal_lm, build_tokenizer, save_causal_lm
from optimum_npu.schema import MANIFEST_FILE

NPU = {"max_seq_len": 64, "batch_size": 2, "prefill_chunk_size": 16}
PROMPT = torch.tensor([[1, 40, 41, 42, 43]])
KEY_INPUTS = {"key_version", "family", "architecture", "weights", "config", "generation", "npu_config", "npu_spec",
              "files", "versions"}


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Every test gets its own cache directory (never the user's ~/.cache)."""
    path = tmp_path / "compile-cache"
    monkeypatch.setenv("OPTIMUM_NPU_CACHE", str(path))
    monkeypatch.delenv("OPTIMUM_NPU_DISABLE_CACHE", raising=False)
    monkeypatch.delenv("OPTIMUM_NPU_CACHE_REPO", raising=False)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_causal_lm(tmp_path_factory.mktemp("ckpt") / "llama", "LlamaForCausalLM")


def export(checkpoint, **kwargs):
    start = time.perf_counter()
    model = NPUModelForCausalLM.from_pretrained(checkpoint, export=True, npu_config=dict(NPU), **kwargs)
    return model, time.perf_counter() - start


def greedy(model) -> list[list[int]]:
    return model.generate(PROMPT, attention_mask=torch.ones_like(PROMPT), max_new_tokens=6, do_sample=False).tolist()


def test_second_compile_is_a_cache_hit_without_capture(checkpoint, cache_dir, caplog, monkeypatch):
    from optimum_npu.models.decoder import export as export_module

    captures = []
    real_capture = export_module.capture
    monkeypatch.setattr(export_module, "capture", lambda *a, **k: captures.append(a[2]) or real_capture(*a, **k))
    caplog.set_level(logging.INFO, logger="optimum_npu.hub.cache")
    first, _ = export(checkpoint)
    assert "compile cache miss" in caplog.text and captures  # the first export captured its graphs
    (entry,) = CompileCache(cache_dir).entries()
    caplog.clear()
    captures.clear()
    second, _ = export(checkpoint)
    assert f"compile cache hit {entry['key'][:16]}" in caplog.text
    assert captures == []  # reused: no graph was captured again (timings: bench/bench_compile_cache.py)
    manifest = json.loads((first.artifact_dir / MANIFEST_FILE).read_text())["files"]
    assert json.loads((second.artifact_dir / MANIFEST_FILE).read_text())["files"] == manifest
    assert greedy(second) == greedy(first)


def test_key_is_the_sha256_of_its_recorded_inputs(checkpoint, cache_dir):
    export(checkpoint)
    (entry,) = CompileCache(cache_dir).entries()
    inputs = entry["inputs"]
    assert set(inputs) == KEY_INPUTS and inputs["key_version"] == KEY_VERSION
    assert entry["key"] == hashlib.sha256(canonical_json(inputs).encode()).hexdigest()
    assert inputs["npu_config"]["max_seq_len"] == 64 and inputs["npu_spec"]["name"] == "atom"
    assert inputs["versions"]["torch"] == torch.__version__
    assert set(inputs["files"]) == {"tokenizer.json", "tokenizer_config.json"}


def test_key_changes_with_every_input(tmp_path):
    def key(model, tokenizer_dir=None, **knobs):
        config = NPUDecoderConfig.coerce({**NPU, **knobs}).resolve(DecoderModelConfig.from_hf(model.config))
        return decoder_cache_key(model, "LlamaForCausalLM", config, tokenizer_dir).key

    model = build_causal_lm("LlamaForCausalLM", seed=0)
    base = key(model)
    assert key(build_causal_lm("LlamaForCausalLM", seed=0)) == base  # same content, new objects
    assert key(build_causal_lm("LlamaForCausalLM", seed=1)) != base  # weights
    edited = copy.deepcopy(model)
    edited.config.rms_norm_eps = 1e-3
    assert key(edited) != base  # config
    assert key(model, batch_size=1) != base and key(model, npu="rngd") != base and key(model, dtype="bfloat16") != base
    build_tokenizer().save_pretrained(tmp_path / "tok")
    with_tokenizer = key(model, tmp_path / "tok")
    assert with_tokenizer != base
    config = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    (tmp_path / "tok" / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 7}))
    assert key(model, tmp_path / "tok") != with_tokenizer


def test_corrupt_entry_is_detected_and_recompiled(checkpoint, cache_dir, caplog):
    first, _ = export(checkpoint)
    expected = greedy(first)
    (entry,) = CompileCache(cache_dir).entries()
    weights = cache_dir / entry["key"] / "artifact" / "model.safetensors"
    with open(weights, "r+b") as handle:  # flip one byte of a weight in place
        handle.seek(weights.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ArtifactError, match="does not match its sha256"):
        verify_artifact(weights.parent)
    caplog.set_level(logging.INFO, logger="optimum_npu.hub.cache")
    second, _ = export(checkpoint)
    assert "is corrupt" in caplog.text and "compile cache miss" in caplog.text
    assert greedy(second) == expected
    verify_artifact(weights.parent)  # the entry was written again, intact


def test_cache_can_be_disabled_or_redirected(checkpoint, cache_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("OPTIMUM_NPU_DISABLE_CACHE", "1")
    export(checkpoint)
    assert not cache_dir.exists()
    monkeypatch.delenv("OPTIMUM_NPU_DISABLE_CACHE")
    export(checkpoint, compile_cache=tmp_path / "elsewhere")
    assert not cache_dir.exists() and len(CompileCache(tmp_path / "elsewhere").entries()) == 1
    assert CompileCache.resolve(False) is None
    with pytest.raises(TypeError, match="compile_cache=3 is invalid"):
        CompileCache.resolve(3)


def test_unusable_cache_directory_only_warns(checkpoint, monkeypatch, tmp_path, caplog):
    (tmp_path / "a-file").write_text("not a directory")
    monkeypatch.setenv("OPTIMUM_NPU_CACHE", str(tmp_path / "a-file"))
    caplog.set_level(logging.WARNING, logger="optimum_npu.hub.cache")
    model, _ = export(checkpoint)
    assert "could not store" in caplog.text and str(tmp_path / "a-file") in caplog.text
    assert model.npu_graphs == ["prefill", "decoder_batch_1", "decoder_batch_2"]
    assert greedy(model)[0][:5] == PROMPT[0].tolist()


def test_cache_command_lists_and_clears(checkpoint, cache_dir, capsys):
    export(checkpoint)
    (entry,) = CompileCache(cache_dir).entries()
    assert main(["cache", "list"]) == 0
    listing = capsys.readouterr().out
    assert f"1 entries in {cache_dir}" in listing and entry["key"][:16] in listing
    assert "LlamaForCausalLM" in listing and "npu=atom" in listing and "max_seq_len=64" in listing
    assert main(["cache", "clear"]) == 2
    assert "needs the keys to remove, or --all" in capsys.readouterr().err
    assert main(["cache", "clear", "0000"]) == 2
    assert "cache key '0000' matches no entry" in capsys.readouterr().err
    assert main(["cache", "clear", entry["key"][:10]]) == 0
    assert CompileCache(cache_dir).entries() == []


def test_hub_repository_as_shared_cache(checkpoint, cache_dir, hub, monkeypatch, capsys, caplog):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    repo = new_repo_id("cache")
    first, _ = export(checkpoint)
    (entry,) = CompileCache(cache_dir).entries()
    key = entry["key"]
    assert main(["cache", "push", "--repo-id", repo, "--private"]) == 0
    assert main(["cache", "list", "--repo-id", repo]) == 0
    assert key[:16] in capsys.readouterr().out

    assert main(["cache", "clear", "--all"]) == 0 and CompileCache(cache_dir).entries() == []
    assert main(["cache", "pull", "--repo-id", repo, key[:12]]) == 0
    assert CompileCache(cache_dir).verified_artifact(key) is not None

    CompileCache(cache_dir).clear()  # a local miss is pulled from OPTIMUM_NPU_CACHE_REPO
    monkeypatch.setenv("OPTIMUM_NPU_CACHE_REPO", repo)
    caplog.set_level(logging.INFO, logger="optimum_npu.hub.cache")
    pulled, _ = export(checkpoint)
    assert f"compile cache hit {key[:16]}" in caplog.text and greedy(pulled) == greedy(first)

    from huggingface_hub import HfApi  # a tampered remote entry is refused, not cached
    HfApi().upload_file(path_or_fileobj=b"{}", path_in_repo=f"{key}/artifact/graphs/prefill.graph.json",
                        repo_id=repo, commit_message="tamper")
    CompileCache(cache_dir).clear()
    capsys.readouterr()
    assert main(["cache", "pull", "--repo-id", repo]) == 2
    assert "prefill.graph.json" in capsys.readouterr().err and CompileCache(cache_dir).entries() == []

    assert main(["cache", "clear", "--repo-id", repo, "--all"]) == 0
    assert remote_cache.remote_keys(repo) == []
