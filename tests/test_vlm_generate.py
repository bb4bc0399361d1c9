"""NPUModelForImageTextToText end to end: generate() parity with eager HF, the artifact, placement, errors, stats.

Tiny Qwen2-VL / Qwen2.5-VL models are built in code (``optimum_npu.models.vlm.tiny``), saved as HF
checkpoints with their processor files, compiled with ``from_pretrained(path, export=True)``, saved
and reloaded: the tests use the reloaded artifact. Compiles are shared for the module.

Patch counts: the tiny processor cuts images into 14x14 patches (grid h x w = height/14 x width/14,
t = 1 for an image) and 2x2 patches merge into one language-model token.
"""

from __future__ import annotations

import copy
import gc
import importlib.util
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from tampering import resign, swap_weights
from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

from optimum_npu import NPUModelForImageTextToText
from optimum_npu.compile.artifact import ArtifactError, sha256_file
from optimum_npu.device.device import get_device
from optimum_npu.device.spec import resolve_spec
from optimum_npu.cli import main
from optimum_npu.hub import CompileCache, build_model_card
from optimum_npu.models.auto import NPUAutoModelForCausalLM, NPUAutoModelForImageTextToText
from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.models.vlm.tiny import TOKEN_IDS, build_vlm_processor, save_vlm
from optimum_npu.models.vlm.visual_config import VisualConfigError
from optimum_npu.models.vlm.visual_runtime import VisualInputError
from optimum_npu.planner import plan
from optimum_npu.schema import MANIFEST_FILE
from marks import first_fast

VLMS = ["Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration"]
BUCKETS = [64, 256, 1024]
LM = {"max_seq_len": 512, "batch_size": 2, "prefill_chunk_size": 32}
NPU_CONFIG = {"visual": {"max_seq_len": BUCKETS}, "language_model": LM,
              "device_map": {"visual": [0], "language_model": [1]}}
ATOM = resolve_spec("atom")
#: (height, width) pixels -> grid (1, h/14, w/14): 16 patches (bucket 64), 140 (256), 48 (64), 600 (1024)
SIZES = {"small": (56, 56), "medium": (140, 196), "wide": (84, 112), "large": (280, 420)}
NEW_TOKENS = 8


def image(name: str, seed: int = 0) -> Image.Image:
    height, width = SIZES[name]
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


def user(images: int, text: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}] * images + [{"type": "text", "text": text}]}]


def prepare(processor, conversations: list[list[dict]], images: list[list[Image.Image]] | None = None) -> dict:
    texts = [processor.apply_chat_template(c, add_generation_prompt=True) for c in conversations]
    return dict(processor(text=texts, images=images, return_tensors="pt", padding=True))


def greedy(model, inputs: dict, **kwargs):
    return model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, **kwargs)


def expected_bucket(patches: int) -> int:
    return next(b for b in BUCKETS if b >= patches)


def device_bytes(*indices: int) -> dict[int, dict[str, int]]:
    gc.collect()  # models dropped by other tests release their reservations when collected
    return {i: get_device(ATOM, i).memory.by_category() for i in indices}


def delta(after: dict, before: dict) -> dict[int, dict[str, int]]:
    return {i: {k: after[i][k] - before[i][k] for k in after[i]} for i in after}


def param_bytes(hf_model, visual: bool) -> int:
    return sum(p.nbytes for name, p in hf_model.named_parameters() if (".visual." in f".{name}") == visual)


# ---- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def processor():
    proc = build_vlm_processor()
    proc.tokenizer.padding_side = "left"
    return proc


class Compiled:
    """A tiny checkpoint (with processor files), its reloaded NPU artifact and the eager HF reference."""

    def __init__(self, architecture: str, root: Path):
        self.architecture = architecture
        self.checkpoint = save_vlm(root / "checkpoint", architecture)
        exported = NPUModelForImageTextToText.from_pretrained(self.checkpoint, export=True,
                                                              npu_config=copy.deepcopy(NPU_CONFIG))
        self.artifact = root / "artifact"
        exported.save_pretrained(self.artifact)
        exported.release()
        self.model = NPUModelForImageTextToText.from_pretrained(self.artifact)
        self.ref = AutoModelForImageTextToText.from_pretrained(self.checkpoint, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def compiled_models(tmp_path_factory):
    """``get(architecture)`` -> the tiny model exported from its saved checkpoint, saved, reloaded (once each)."""
    cache: dict[str, Compiled] = {}

    def get(architecture: str) -> Compiled:
        if architecture not in cache:
            cache[architecture] = Compiled(architecture, tmp_path_factory.mktemp(architecture))
        return cache[architecture]

    yield get
    for entry in cache.values():
        entry.model.release()


@pytest.fixture(params=first_fast(VLMS))
def vlm(request, compiled_models) -> Compiled:
    return compiled_models(request.param)


@pytest.fixture
def qwen2(compiled_models) -> Compiled:
    return compiled_models(VLMS[0])


# ---- 1. parity with eager Transformers ---------------------------------------------------------
def test_batch_of_two_images_in_different_buckets(vlm, processor):
    inputs = prepare(processor, [user(1, "Describe."), user(1, "What is in this picture, in detail?")],
                     [[image("small")], [image("medium", 1)]])
    assert inputs["attention_mask"][0].min() == 0 < inputs["attention_mask"][1].min()   # row 0 is left-padded
    assert inputs["input_ids"].shape[1] > LM["prefill_chunk_size"]                     # image tokens span chunks
    output = greedy(vlm.model, inputs)
    assert output.tolist() == greedy(vlm.ref, inputs).tolist()
    stats = vlm.model.npu_stats
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 4], [1, 10, 14]]
    assert [i.bucket for i in stats.visual.images] == [64, 256]
    assert [i.patches for i in stats.visual.images] == [16, 140]


def test_several_images_in_one_prompt(vlm, processor):
    images = [image("small"), image("large", 1), image("wide", 2)]
    inputs = prepare(processor, [user(3, "Compare the three images.")], [images])
    assert greedy(vlm.model, inputs).tolist() == greedy(vlm.ref, inputs).tolist()
    assert [i.bucket for i in vlm.model.npu_stats.visual.images] == [64, 1024, 64]


def test_text_only_prompt(vlm, processor):
    inputs = prepare(processor, [[{"role": "user", "content": "Hello, no picture today."}]])
    assert "pixel_values" not in inputs
    clock = get_device(ATOM, 0).clock_s
    assert greedy(vlm.model, inputs).tolist() == greedy(vlm.ref, inputs).tolist()
    assert vlm.model.npu_stats.visual is None
    assert get_device(ATOM, 0).clock_s == clock            # the visual encoder did not run


def test_text_only_and_image_prompts_in_one_batch(vlm, processor):
    inputs = prepare(processor, [[{"role": "user", "content": "Only words here, nothing else at all."}],
                                 user(1, "And a picture?")], [[], [image("medium")]])
    assert greedy(vlm.model, inputs).tolist() == greedy(vlm.ref, inputs).tolist()
    assert [i.bucket for i in vlm.model.npu_stats.visual.images] == [256]


def test_step_logits_match_eager(vlm, processor):
    conversations = [user(1, "Describe."), user(1, "What?")]
    inputs = prepare(processor, conversations, [[image("small")], [image("wide", 1)]])
    npu = greedy(vlm.model, inputs, output_logits=True, return_dict_in_generate=True)
    ref = greedy(vlm.ref, inputs, output_logits=True, return_dict_in_generate=True)
    assert npu.sequences.tolist() == ref.sequences.tolist()
    assert len(npu.logits) == len(ref.logits) == NEW_TOKENS
    for ours, theirs in zip(npu.logits, ref.logits):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    # the image matters: another picture of the same size moves the prefill logits far beyond the tolerance
    other = prepare(processor, conversations, [[image("small", 7)], [image("wide", 1)]])
    moved = greedy(vlm.ref, other, output_logits=True, return_dict_in_generate=True).logits[0]
    assert (moved[0] - npu.logits[0][0]).abs().max() > 1e-2


@pytest.mark.slow  # compiles a model of its own (one visual bucket, the prefill_all_logits graph)
def test_logits_of_every_position_match_eager(tmp_path, processor):
    """``model(**inputs, logits_to_keep=0).logits`` of a VLM compiled with ``prefill_logits="all"`` is [B, S, V],
    equal to eager Transformers at every real position of a left-padded batch holding an image; padding is 0."""
    checkpoint = save_vlm(tmp_path / "checkpoint", VLMS[0])
    npu_config = {"visual": {"max_seq_len": [64]},
                  "language_model": {**LM, "decoder_batch_sizes": [2], "prefill_logits": "all"}}
    exported = NPUModelForImageTextToText.from_pretrained(checkpoint, export=True, npu_config=npu_config)
    exported.save_pretrained(tmp_path / "artifact")
    exported.release()
    model = NPUModelForImageTextToText.from_pretrained(tmp_path / "artifact")
    try:
        assert "prefill_all_logits" in model.npu_graphs
        inputs = prepare(processor, [user(1, "Describe."), [{"role": "user", "content": "Words only, and more."}]],
                         [[image("small")], []])
        mask = inputs["attention_mask"].bool()
        assert not mask[0].all() and inputs["input_ids"].shape[1] > LM["prefill_chunk_size"]
        logits = model(**inputs, logits_to_keep=0).logits
        ref = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32).eval()
        with torch.no_grad():
            expected = ref(**inputs, logits_to_keep=0).logits
        assert logits.shape == expected.shape == (*inputs["input_ids"].shape, ref.config.get_text_config().vocab_size)
        torch.testing.assert_close(logits[mask], expected[mask], atol=1e-4, rtol=0)
        assert not logits[~mask].any()
        assert [i.bucket for i in model.npu_stats.visual.images] == [64]
        torch.testing.assert_close(model(**inputs).logits[:, 0], logits[:, -1], atol=1e-5, rtol=0)
    finally:
        model.release()


def test_every_position_needs_the_knob_before_the_visual_encoder_runs(qwen2, processor, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the visual encoder ran although the request is refused")

    monkeypatch.setattr(qwen2.model.visual, "encode_features", refuse)
    inputs = prepare(processor, [user(1, "Describe.")], [[image("small")]])
    with pytest.raises(ValueError, match="recompile with npu_config=\\{'prefill_logits': 'all'\\}"):
        qwen2.model(**inputs, logits_to_keep=0)


# ---- 2. the artifact ---------------------------------------------------------------------------
def test_artifact_layout_and_manifest(qwen2):
    root = qwen2.artifact
    assert (root / "visual").is_dir() and (root / "language_model").is_dir()
    assert sorted(p.name for p in (root / "visual" / "graphs").iterdir()) == sorted(
        f"visual_{b}.graph.json" for b in BUCKETS)
    assert sorted(p.name for p in (root / "language_model" / "graphs").iterdir()) == [
        "decoder_batch_1.graph.json", "decoder_batch_2.graph.json", "prefill.graph.json"]
    manifests = sorted(p.relative_to(root).as_posix() for p in root.rglob(MANIFEST_FILE))
    assert manifests == [MANIFEST_FILE], "one manifest, at the top, for both submodules"
    manifest = json.loads((root / MANIFEST_FILE).read_text())["files"]
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {MANIFEST_FILE}
    assert set(manifest) == on_disk, f"files the manifest does not cover: {sorted(on_disk - set(manifest))}"
    for rel in ("visual/graphs/visual_1024.graph.json", "visual/model.safetensors",
                "language_model/graphs/prefill.graph.json"):
        assert manifest[rel]["sha256"] == sha256_file(root / rel)
    assert not [p for p in root.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl")]


def test_tampered_submodule_file_is_refused(qwen2, tmp_path):
    copy = tmp_path / "artifact"
    shutil.copytree(qwen2.artifact, copy)
    graph = copy / "visual" / "graphs" / "visual_64.graph.json"
    graph.write_text(graph.read_text().replace('"visual_64"', '"visual_65"', 1))
    with pytest.raises(ArtifactError, match="visual/graphs/visual_64.graph.json does not match its sha256"):
        NPUModelForImageTextToText.from_pretrained(copy)


def test_visual_weights_stored_once(qwen2):
    """The vision tower's weights live in visual/ only, not again in the language model's files."""
    from safetensors import safe_open

    stored = {}
    for path in qwen2.artifact.rglob("*.safetensors"):
        with safe_open(path, "pt") as handle:
            stored[path.relative_to(qwen2.artifact).as_posix()] = list(handle.keys())
    visual_names = {name for name, _ in qwen2.ref.model.visual.named_parameters()}
    assert visual_names <= set(stored.pop("visual/model.safetensors"))
    leaked = [(file, name) for file, names in stored.items() for name in names if ".visual." in f".{name}"]
    assert not leaked, f"vision weights duplicated in the language model's files: {leaked[:3]}..."


def test_reload_with_class_and_auto_class(qwen2, processor):
    inputs = prepare(processor, [user(1, "Describe."), user(2, "Two?")],
                     [[image("medium")], [image("small", 1), image("wide", 2)]])
    expected = greedy(qwen2.ref, inputs).tolist()
    for load in (NPUModelForImageTextToText.from_pretrained, NPUAutoModelForImageTextToText.from_pretrained):
        model = load(qwen2.artifact, npu_config={"device_map": {"visual": [2], "language_model": [3]}})
        assert type(model) is NPUModelForImageTextToText
        assert model.visual.device.index == 2 and [d.index for d in model._runtime.engine.devices] == [3]
        assert greedy(model, inputs).tolist() == expected
        model.release()
    with pytest.raises(ValueError, match="not supported by NPUAutoModelForCausalLM"):
        NPUAutoModelForCausalLM.from_pretrained(qwen2.artifact)


def test_export_ships_the_processor_files(qwen2, processor):
    root = qwen2.artifact
    for name in ("preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (qwen2.checkpoint / name).is_file(), name
        assert (root / name).read_bytes() == (qwen2.checkpoint / name).read_bytes(), name
    image_processor = AutoImageProcessor.from_pretrained(root)
    tokenizer = AutoTokenizer.from_pretrained(root, padding_side="left")
    conversation = user(1, "Describe.")
    text = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    assert text == processor.apply_chat_template(conversation, add_generation_prompt=True)
    pixels = image_processor(images=[image("medium")], return_tensors="pt")
    reference = processor(text=[text], images=[image("medium")], return_tensors="pt")
    assert torch.equal(pixels["pixel_values"], reference["pixel_values"])
    assert torch.equal(pixels["image_grid_thw"], reference["image_grid_thw"])
    expanded = text.replace("<|image_pad|>", "<|image_pad|>" * (int(pixels["image_grid_thw"].prod()) // 4))
    assert tokenizer(expanded, return_tensors="pt")["input_ids"].tolist() == reference["input_ids"].tolist()
    if importlib.util.find_spec("torchvision") is not None:   # the video processor class needs torchvision
        from transformers import AutoProcessor

        loaded = AutoProcessor.from_pretrained(root)
        assert torch.equal(loaded(text=[text], images=[image("medium")], return_tensors="pt")["input_ids"],
                           reference["input_ids"])


# ---- 3. placement ------------------------------------------------------------------------------
def test_device_map_accounts_memory_per_device(qwen2, processor):
    before = device_bytes(5, 6)
    model = NPUModelForImageTextToText.from_pretrained(
        qwen2.artifact, npu_config={"device_map": {"visual": [5], "language_model": [6]}})
    try:
        used = delta(device_bytes(5, 6), before)
        visual, language = used[5], used[6]
        assert visual["weights"] == pytest.approx(param_bytes(qwen2.ref, visual=True), abs=1024)
        assert visual["kv_cache"] == 0 and visual["workspace"] > 0
        # kv: 2 layers x (key, value) x 2 blocks of 512 tokens x 2 kv heads x head_dim 16 x fp32
        assert language["kv_cache"] == 2 * 2 * 2 * 512 * 2 * 16 * 4
        inputs = prepare(processor, [user(1, "Describe.")], [[image("wide")]])
        clocks = [get_device(ATOM, i).clock_s for i in (5, 6)]
        assert greedy(model, inputs).tolist() == greedy(qwen2.ref, inputs).tolist()
        stats = model.npu_stats
        assert get_device(ATOM, 5).clock_s - clocks[0] == pytest.approx(stats.visual.seconds)
        assert get_device(ATOM, 6).clock_s - clocks[1] == pytest.approx(stats.prefill_s + stats.decode_s)
        # the language model's device holds its own weights, not a second copy of the vision tower's
        assert language["weights"] == pytest.approx(param_bytes(qwen2.ref, visual=False), abs=1024)
    finally:
        model.release()
    assert delta(device_bytes(5, 6), before) == {i: dict.fromkeys(visual, 0) for i in (5, 6)}


def test_profile_shows_visual_bucket_calls(qwen2, processor):
    """With profile=True the visual encoder's bucket calls land on its device's track next to the decoder's."""
    model = NPUModelForImageTextToText.from_pretrained(
        qwen2.artifact, npu_config={"device_map": {"visual": [5], "language_model": [6]},
                                    "language_model": {"profile": True}})
    try:
        inputs = prepare(processor, [user(2, "Compare."), user(1, "Describe.")],
                         [[image("small"), image("medium", 1)], [image("wide", 2)]])
        assert greedy(model, inputs).tolist() == greedy(qwen2.ref, inputs).tolist()
        profile, stats = model.npu_profile, model.npu_stats
        visual_calls = [call for call in profile.calls if call.args["phase"] == "visual"]
        assert [call.device for call in visual_calls] == [get_device(ATOM, 5).name] * 3
        assert [call.name for call in visual_calls] == [f"visual_{b}" for b in (64, 256, 64)]
        assert [i.bucket for i in stats.visual.images] == [64, 256, 64]
        assert profile.device_seconds(get_device(ATOM, 5).name) == pytest.approx(stats.visual.seconds)
        language = [call for call in profile.calls if call.device == get_device(ATOM, 6).name]
        assert {call.args["phase"] for call in language} == {"prefill", "decode"}
        assert profile.device_seconds(get_device(ATOM, 6).name) == pytest.approx(stats.prefill_s + stats.decode_s)
    finally:
        model.release()


@pytest.mark.slow
def test_language_model_tensor_parallel(qwen2, processor):
    hf = qwen2.ref
    before = device_bytes(2, 3, 4)
    model = NPUModelForImageTextToText.from_model(hf, npu_config={
        "visual": {"max_seq_len": [64, 256]},
        "language_model": {**LM, "tensor_parallel_size": 2},
        "device_map": {"visual": [4], "language_model": [2, 3]}})
    try:
        used = delta(device_bytes(2, 3, 4), before)
        assert used[4]["weights"] == pytest.approx(param_bytes(hf, visual=True), abs=1024)
        assert used[4]["kv_cache"] == 0
        assert used[2] == used[3]                                         # one shard each
        assert used[2]["kv_cache"] == 2 * 2 * 2 * 512 * 1 * 16 * 4       # one of the 2 kv heads per device
        assert used[2]["collective_buffers"] > 0
        inputs = prepare(processor, [user(1, "Describe."), user(1, "What is in this picture?")],
                         [[image("small")], [image("medium", 1)]])
        assert greedy(model, inputs).tolist() == greedy(hf, inputs).tolist()
        assert model.npu_stats.tensor_parallel_size == 2
        assert used[2]["weights"] < param_bytes(hf, visual=False)          # a shard of the LM, no vision weights
    finally:
        model.release()
    assert all(value == 0 for usage in delta(device_bytes(2, 3, 4), before).values() for value in usage.values())


# ---- 4. errors, before any compute -------------------------------------------------------------
@pytest.fixture
def no_compile(monkeypatch):
    """Compiling anything fails the test: these errors must come before any compile work."""
    import optimum_npu.models.vlm.export as export

    def refuse(*args, **kwargs):
        raise AssertionError("compiled before validating the npu_config")

    monkeypatch.setattr(export, "compile_visual", refuse)
    monkeypatch.setattr(export, "compile_decoder", refuse)


@pytest.mark.parametrize("npu_config, error, message", [
    ({"visual": {"max_seq_len": [64, 250]}}, VisualConfigError,
     r"visual.max_seq_len=\[64, 250\] is invalid: \[250\] are not multiples of spatial_merge_size\*\*2 = 4.*"
     r"use \[64, 252\]"),
    ({"visual": {"max_seq_lens": [64]}}, VisualConfigError, r"unknown visual option\(s\) \['max_seq_lens'\]"),
    ({"language_model": {"max_seqlen": 64}}, NPUConfigError, r"unknown npu_config keys \['max_seqlen'\]"),
    ({"vision": {"max_seq_len": 64}}, NPUConfigError, r"unknown npu_config keys \['vision'\].*'visual', "
                                                      r"'language_model'"),
    ({"max_seq_len": 64}, NPUConfigError, r"unknown npu_config keys \['max_seq_len'\] for a vision-language"),
    ({"device_map": {"vision": [0]}}, NPUConfigError, r"device_map has unknown submodules \['vision'\]"),
    ({"language_model": {**LM, "enable_prefix_caching": True}}, NPUConfigError,
     "enable_prefix_caching=True is not supported for vision-language models"),
], ids=["bucket-not-multiple-of-4", "unknown-visual-key", "unknown-lm-key", "unknown-top-key", "flat-config",
        "device-map-submodule", "prefix-caching"])
def test_invalid_compile_config(qwen2, no_compile, npu_config, error, message):
    with pytest.raises(error, match=message):
        NPUModelForImageTextToText.from_model(qwen2.ref, npu_config=npu_config)


@pytest.mark.parametrize("npu_config, message", [
    ({"visual": {"max_seq_len": [64, 256]}}, "compile knobs cannot change at load time"),
    ({"visual": {"dtype": "float16"}}, "compile knobs cannot change at load time"),
    ({"language_model": {"max_seq_len": 256}}, "compile knobs cannot change at load time"),
    ({"language_model": {"prefill_chunk_size": 16}}, "compile knobs cannot change at load time"),
    ({"language_model": {"enable_prefix_caching": True}}, "enable_prefix_caching=True is not supported"),
    ({"device_map": {"vision": [2]}}, r"device_map has unknown submodules \['vision'\]"),
], ids=["visual-buckets", "visual-dtype", "lm-max-seq-len", "lm-chunk", "lm-prefix-caching", "device-map"])
def test_invalid_load_options(qwen2, npu_config, message):
    before = device_bytes(*range(8))
    with pytest.raises(NPUConfigError, match=message):
        NPUModelForImageTextToText.from_pretrained(qwen2.artifact, npu_config=npu_config)
    assert device_bytes(*range(8)) == before                       # nothing was loaded


def test_image_larger_than_largest_bucket(qwen2):
    big = build_vlm_processor(max_pixels=420 * 560)
    pixels = np.random.default_rng(0).integers(0, 255, (420, 560, 3), dtype=np.uint8)
    inputs = prepare(big, [user(1, "Too big?")], [[Image.fromarray(pixels)]])
    assert inputs["image_grid_thw"].tolist() == [[1, 30, 40]]        # 1200 patches > 1024 (300 tokens < 512)
    clocks = [get_device(ATOM, i).clock_s for i in (0, 1)]
    with pytest.raises(VisualInputError, match=r"needs 1200 vision patches but the largest compiled visual bucket "
                                               r"\(visual.max_seq_len\) is 1024: add a bucket >= 1200"):
        greedy(qwen2.model, inputs)
    assert [get_device(ATOM, i).clock_s for i in (0, 1)] == clocks


def test_batch_larger_than_batch_size(qwen2, processor):
    inputs = prepare(processor, [user(1, "a"), user(1, "b"), user(1, "c")],
                     [[image("small")], [image("small", 1)], [image("small", 2)]])
    clocks = [get_device(ATOM, i).clock_s for i in (0, 1)]
    with pytest.raises(ValueError, match="a batch of 3 sequences exceeds the compiled batch_size=2"):
        greedy(qwen2.model, inputs)
    assert [get_device(ATOM, i).clock_s for i in (0, 1)] == clocks


# ---- 5. stats ----------------------------------------------------------------------------------
def test_ttft_buckets_and_padding_waste(vlm, processor):
    images = [image("small"), image("wide", 1), image("medium", 2), image("large", 3)]
    inputs = prepare(processor, [user(2, "First two."), user(2, "Last two.")], [images[:2], images[2:]])
    clock = get_device(ATOM, 0).clock_s
    greedy(vlm.model, inputs)
    stats = vlm.model.npu_stats
    # TTFT = the visual encoder (on its own device, before the prefills) + every prefill chunk
    visual_seconds = get_device(ATOM, 0).clock_s - clock
    prefill = sum(s.seconds + s.host_seconds for s in stats.steps if s.phase == "prefill")
    assert visual_seconds > 0 and prefill > 0 and stats.visual.seconds == pytest.approx(visual_seconds)
    assert stats.ttft_s == pytest.approx(prefill + visual_seconds)
    assert stats.to_dict()["ttft_ms"] == pytest.approx((prefill + visual_seconds) * 1e3)
    assert stats.to_dict()["visual_ms"] == pytest.approx(visual_seconds * 1e3)
    # buckets and padding, from the processor's grids
    patches = [int(t * h * w) for t, h, w in inputs["image_grid_thw"].tolist()]
    assert patches == [16, 48, 140, 600]
    assert int((inputs["input_ids"] == TOKEN_IDS["<|image_pad|>"]).sum()) == sum(patches) // 4
    buckets = [expected_bucket(p) for p in patches]                     # [64, 64, 256, 1024]
    visual = stats.visual
    assert [i.patches for i in visual.images] == patches and [i.bucket for i in visual.images] == buckets
    assert [i.padded_patches for i in visual.images] == [b - p for b, p in zip(buckets, patches)]
    waste = sum(b - p for b, p in zip(buckets, patches)) / sum(buckets)   # (48 + 16 + 116 + 424) / 1408
    assert visual.padding_waste == pytest.approx(waste)
    assert stats.to_dict()["visual_buckets"] == buckets
    # one static graph per bucket: its time depends on the bucket, not on the patches it carries
    small, wide, medium, large = visual.images
    assert small.seconds == pytest.approx(wide.seconds) and small.seconds < medium.seconds < large.seconds
    assert "16->64, 48->64, 140->256, 600->1024" in str(stats) and f"padding waste {100 * waste:.1f}%" in str(stats)


# ---- the family registry: compile cache and model card -------------------------------------------------
@pytest.mark.slow
def test_second_export_is_a_verified_cache_hit(qwen2, processor, tmp_path, caplog, monkeypatch):
    """A vision-language export goes through the compile cache like a decoder's: the second export reuses the
    entry without capturing a graph; an entry whose visual weights were swapped (manifest re-signed) is caught
    by the hit check, dropped and recompiled."""
    from optimum_npu.models.vlm import visual_export

    cache = CompileCache(tmp_path / "cache")
    captures = []
    real_capture = visual_export.capture
    monkeypatch.setattr(visual_export, "capture", lambda *a, **k: captures.append(a[2]) or real_capture(*a, **k))
    caplog.set_level(logging.INFO, logger="optimum_npu.hub.cache")
    inputs = prepare(processor, [user(1, "Describe.")], [[image("medium")]])
    expected = greedy(qwen2.ref, inputs).tolist()

    def export():
        return NPUModelForImageTextToText.from_pretrained(qwen2.checkpoint, export=True, compile_cache=cache,
                                                          npu_config=copy.deepcopy(NPU_CONFIG))

    export().release()
    (entry,) = cache.entries()
    assert entry["inputs"]["family"] == "vlm" and "compile cache miss" in caplog.text
    caplog.clear()
    captures.clear()
    hit = export()
    try:
        assert f"compile cache hit {entry['key'][:16]}" in caplog.text and captures == []
        assert greedy(hit, inputs).tolist() == expected
    finally:
        hit.release()
    weights = cache.artifact_dir(entry["key"]) / "visual" / "model.safetensors"
    with safe_open(str(weights), framework="pt") as handle:
        name = next(k for k in sorted(handle.keys()) if handle.get_tensor(k).dim() == 2)
    swap_weights(weights, name)
    resign(cache.artifact_dir(entry["key"]))
    caplog.clear()
    recompiled = export()
    try:
        assert "is not the compile asked for" in caplog.text and "differs from the model being compiled" in caplog.text
        assert captures and greedy(recompiled, inputs).tolist() == expected
    finally:
        recompiled.release()


def test_model_card_names_the_vision_language_class(qwen2):
    """The card comes from the family's class: its pipeline tag, its usage snippet, the submodule knobs."""
    card = build_model_card(qwen2.artifact, qwen2.model.card_section("org/qwen2-vl-npu"), repo_id="org/qwen2-vl-npu",
                            figures=qwen2.model.card_figures(speed=False))
    text = str(card)
    assert card.data.pipeline_tag == "image-text-to-text" and "NPUModelForCausalLM" not in text
    assert 'NPUModelForImageTextToText.from_pretrained("org/qwen2-vl-npu")' in text
    assert f"torch {torch.__version__}" in text and "torch None" not in text
    assert "| `visual` |" in text and "| `language_model` |" in text and "| weights |" in text


def test_command_line_profiles_a_vision_language_artifact(qwen2, tmp_path, capsys):
    """``optimum-npu profile`` loads any family through the registry (its placement hook turns the profiler on)."""
    trace = tmp_path / "trace.json"
    assert main(["profile", str(qwen2.artifact), "--prompt", "Hi", "--max-new-tokens", "2", "--device", "4",
                 "--out", str(trace)]) == 0
    events = json.loads(trace.read_text())["traceEvents"]
    assert any("npu:4" in str(e.get("args", {})) or "npu:4" in str(e) for e in events)
    assert "trace written to" in capsys.readouterr().out


def test_planner_says_it_plans_decoders_only(qwen2):
    with pytest.raises(ValueError, match="planner sizes decoder-only language models.*is a vision-language model"):
        plan(qwen2.checkpoint)


def test_docs_generate_snippet_runs_on_the_default_install(qwen2):
    """docs/vlm.md's snippet needs no torchvision and gives the eager model's tokens."""
    source = (Path(__file__).resolve().parents[1] / "docs" / "vlm.md").read_text()
    snippet = source.split("## Generate\n\n```python\n")[1].split("```")[0].replace('"qwen2-vl-npu"', repr(str(qwen2.artifact)))
    scope = {"model": qwen2.model, "photo": image("small")}
    exec(compile(snippet, "docs/vlm.md", "exec"), scope)
    tokenizer = scope["tokenizer"]
    inputs = {**tokenizer([scope["text"]], return_tensors="pt"), **scope["vision"]}
    expected = qwen2.ref.generate(**inputs, max_new_tokens=64, do_sample=False)
    assert scope["out"].tolist() == expected.tolist()
