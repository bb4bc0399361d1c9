"""Errors a newcomer meets first, translated: a mistyped path, a Hub failure, a missing tokenizer, a
mistyped knob, an oversized KV pool, a checkpoint of another family — each names the input and the fix."""

from __future__ import annotations

import logging
import shutil

import pytest
from transformers import AutoConfig

from optimum_npu import NPUConfigError, NPUModelForCausalLM
from optimum_npu.cli import main
from optimum_npu.compile.artifact import write_manifest
from optimum_npu.device.memory import DeviceOutOfMemoryError
from optimum_npu.models.base import HubDownloadError
from optimum_npu.models.families import FAMILIES
from optimum_npu.models.registry import FAMILY_CLASSES, lookup_architecture
from optimum_npu.models.tiny import build_causal_lm
from optimum_npu.schema import MANIFEST_FILE


@pytest.mark.parametrize("model_id", ["./no-such-dir", "no/such/dir", "../typo/"])
def test_mistyped_local_path_says_no_such_directory(model_id):
    with pytest.raises(ValueError, match=r"no such directory .*check the path") as err:
        NPUModelForCausalLM.from_pretrained(model_id, export=True)
    assert "Repo id must" not in str(err.value) and "internet" not in str(err.value)


def test_hub_failure_is_one_line_naming_the_lookup(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubDownloadError, match=r"'missing-org/missing-model' is not a local directory, so it was "
                                               r"looked up on the Hub, which failed: .*HF_HUB_OFFLINE") as err:
        NPUModelForCausalLM.from_pretrained("missing-org/missing-model")
    assert "\n" not in str(err.value)


def test_unknown_knob_suggests_the_close_one():
    model = build_causal_lm("LlamaForCausalLM")
    with pytest.raises(NPUConfigError, match=r"'max_seqlen' -> did you mean 'max_seq_len'\?"):
        NPUModelForCausalLM.from_model(model, npu_config={"max_seqlen": 64}, compile_cache=False)


def test_oversized_kv_pool_suggests_the_blocks_that_fit():
    model = build_causal_lm("LlamaForCausalLM")
    with pytest.raises(DeviceOutOfMemoryError, match=r"kvcache_num_blocks=\d+ fits \(the pool of 10000000 blocks"):
        NPUModelForCausalLM.from_model(model, npu_config={"max_seq_len": 64, "kvcache_num_blocks": 10_000_000,
                                                          "kvcache_block_size": 64}, compile_cache=False)


def test_vision_language_checkpoint_points_to_its_class():
    config = AutoConfig.for_model("qwen2_vl", architectures=["Qwen2VLForConditionalGeneration"])
    with pytest.raises(ValueError, match="vision-language model.*NPUModelForImageTextToText"):
        lookup_architecture(config, "decoder")


def test_family_class_names_match_the_registry():
    assert FAMILY_CLASSES == {name: family.model_class.__name__ for name, family in FAMILIES.items()}


@pytest.mark.slow
def test_export_without_tokenizer_warns_and_generate_says_what_to_do(llama, tmp_path, caplog, capsys):
    caplog.set_level(logging.WARNING)
    model = NPUModelForCausalLM.from_model(llama.ref, npu_config=dict(llama.npu_config), compile_cache=False)
    try:
        assert "no tokenizer files in the in-memory model" in caplog.text
    finally:
        model.release()
    bare = tmp_path / "bare"
    shutil.copytree(llama.artifact, bare)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        (bare / name).unlink(missing_ok=True)
    (bare / MANIFEST_FILE).unlink()
    write_manifest(bare)
    assert main(["generate", str(bare), "--prompt", "Hi", "--max-new-tokens", "2"]) == 2
    error = capsys.readouterr().err
    assert "holds no tokenizer files" in error and "--tokenizer" in error and "Traceback" not in error
    assert main(["generate", str(bare), "--prompt", "Hi", "--max-new-tokens", "2",
                 "--tokenizer", str(llama.artifact)]) == 0
