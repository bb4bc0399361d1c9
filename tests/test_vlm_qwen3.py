"""Qwen3-VL on the NPU: the visual encoder per patch bucket (learned position grid interpolated per
image, DeepStack features) and generate() parity with eager HF (DeepStack added after the first
decoder layers at the image tokens).

The tiny Qwen3-VL (``optimum_npu.models.vlm.tiny``) cuts images into 16x16 patches (as the real
checkpoints), merges 2x2 patches into one language-model token, has 3 vision blocks of which
blocks 0 and 1 feed DeepStack mergers, and a 3-layer Qwen3-style (q/k norm) language model.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText

from optimum_npu import NPUModelForImageTextToText
from optimum_npu.models.model_config import DecoderModelConfig
from optimum_npu.models.vlm.tiny import TOKEN_IDS, build_vlm_processor, save_vlm
from optimum_npu.models.vlm.visual_config import VisualModelConfig
from optimum_npu.models.vlm.visual_inputs import prepare_image, unpad_output
from optimum_npu.models.vlm.visual_wrapper import StaticQwen3Visual

pytestmark = pytest.mark.slow  # Qwen3-VL compiles its own model; the quick tier covers Qwen2-VL

ARCH = "Qwen3VLForConditionalGeneration"
BUCKETS = [64, 256]
NPU_CONFIG = {"visual": {"max_seq_len": BUCKETS},
              "language_model": {"max_seq_len": 512, "batch_size": 2, "prefill_chunk_size": 32}}
PATCH_DIM = 3 * 2 * 16 * 16
#: (t, h, w) patch grids: 16 and 72 patches -> bucket 64 ... 140 and 192 (a 2-frame video) -> bucket 256
GRIDS = [(1, 4, 4), (1, 10, 14), (1, 12, 6), (2, 8, 12)]
NEW_TOKENS = 10


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    checkpoint = save_vlm(tmp_path_factory.mktemp("qwen3_vl") / "checkpoint", ARCH)
    model = NPUModelForImageTextToText.from_pretrained(checkpoint, export=True, npu_config=NPU_CONFIG)
    ref = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32).eval()
    yield model, ref
    model.release()


@pytest.fixture(scope="module")
def processor():
    proc = build_vlm_processor(patch_size=16)
    proc.tokenizer.padding_side = "left"
    return proc


def _pixels(grids, seed=0):
    return torch.randn(sum(t * h * w for t, h, w in grids), PATCH_DIM, generator=torch.Generator().manual_seed(seed))


def _eager_visual(ref, pixel_values, grids):
    with torch.no_grad():
        return ref.model.visual(pixel_values, grid_thw=torch.tensor(grids))


def _image(height: int, width: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


def _prepare(processor, texts: list[str], images: list[list[Image.Image]] | None):
    conversations = [[{"role": "user", "content": [{"type": "image"}] * (len(images[i]) if images else 0)
                       + [{"type": "text", "text": text}]}] for i, text in enumerate(texts)]
    prompts = [processor.apply_chat_template(c, add_generation_prompt=True) for c in conversations]
    return dict(processor(text=prompts, images=images, return_tensors="pt", padding=True))


def _greedy(model, inputs, **kwargs):
    return model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, **kwargs)


# ---- the visual encoder --------------------------------------------------------------------------
def test_config_normalised(compiled):
    model, ref = compiled
    visual = VisualModelConfig.from_hf(ref.config)
    assert (visual.kind, visual.depth, visual.patch_size, visual.pos_grid_side) == ("qwen3_vl", 3, 16, 6)
    assert visual.deepstack_visual_indexes == (0, 1)
    assert model.visual.model == visual                       # read back from the artifact's visual_config.json
    assert DecoderModelConfig.from_hf(ref.config).deepstack_layers == 2


def test_visual_parity_across_buckets(compiled):
    """Merged tokens and both DeepStack feature maps equal eager HF within 1e-4, whatever the padding."""
    model, ref = compiled
    pixel_values = _pixels(GRIDS)
    features = model.visual.encode_features(pixel_values, torch.tensor(GRIDS))
    reference = _eager_visual(ref, pixel_values, GRIDS)
    tokens = sum(t * h * w for t, h, w in GRIDS) // 4
    assert features.embeds.shape == reference.pooler_output.shape == (tokens, 64)
    torch.testing.assert_close(features.embeds, reference.pooler_output, atol=1e-4, rtol=0)
    assert features.deepstack.shape == (2, tokens, 64)
    for ours, theirs in zip(features.deepstack, reference.deepstack_features, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    assert [image.bucket for image in features.stats.images] == [64, 256, 256, 256]
    assert [image.padded_patches for image in features.stats.images] == [48, 116, 184, 64]
    # encode() is the same call without the DeepStack features
    embeds, _ = model.visual.encode(pixel_values[:16], torch.tensor(GRIDS[:1]))
    torch.testing.assert_close(embeds, features.embeds[:4], atol=0, rtol=0)


def test_position_grid_and_masks_matter(compiled):
    """The parity test can fail: without the learned position embedding, or with the padding
    attended to, the outputs move far beyond the tolerance."""
    _, ref = compiled
    config = VisualModelConfig.from_hf(ref.config)
    grid = (1, 10, 14)
    pixel_values = _pixels([grid], seed=1)
    reference = _eager_visual(ref, pixel_values, [grid]).pooler_output
    wrapper = StaticQwen3Visual(ref.model.visual, config)
    image = prepare_image(pixel_values, grid, 256, config, torch.float32)
    with torch.no_grad():
        merged, _ = wrapper(**image.graph_inputs())
        torch.testing.assert_close(unpad_output(merged, image, 4), reference, atol=1e-4, rtol=0)
        no_positions = wrapper(**{**image.graph_inputs(), "pos_weights": torch.zeros_like(image.pos_weights)})[0]
        unmasked = wrapper(**{**image.graph_inputs(), "full_segments": torch.zeros_like(image.full_segments)})[0]
    assert (unpad_output(no_positions, image, 4) - reference).abs().max() > 0.1
    assert (unpad_output(unmasked, image, 4) - reference).abs().max() > 0.1


# ---- generate() ------------------------------------------------------------------------------------
def test_generate_batch_images_in_different_buckets(compiled, processor):
    model, ref = compiled
    inputs = _prepare(processor, ["Describe.", "What is in this picture, in detail?"],
                      [[_image(64, 64, 0)], [_image(160, 224, 1)]])
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 4], [1, 10, 14]]
    assert inputs["attention_mask"][0].min() == 0 < inputs["attention_mask"][1].min()   # row 0 is left-padded
    assert inputs["input_ids"].shape[1] > NPU_CONFIG["language_model"]["prefill_chunk_size"]  # spans chunks
    npu = _greedy(model, inputs, output_logits=True, return_dict_in_generate=True)
    eager = _greedy(ref, inputs, output_logits=True, return_dict_in_generate=True)
    assert npu.sequences.tolist() == eager.sequences.tolist()
    for ours, theirs in zip(npu.logits, eager.logits, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    assert [image.bucket for image in model.npu_stats.visual.images] == [64, 256]
    assert int((inputs["input_ids"] == TOKEN_IDS["<|image_pad|>"]).sum()) == (16 + 140) // 4


def test_deepstack_matters(compiled, processor, monkeypatch):
    """Zeroing the DeepStack features moves the prefill logits far beyond the parity tolerance."""
    model, _ = compiled
    inputs = _prepare(processor, ["Describe."], [[_image(160, 224, 1)]])
    logits = _greedy(model, inputs, output_logits=True, return_dict_in_generate=True).logits[0]
    encode = model.visual.encode_features

    def without_deepstack(*args):
        features = encode(*args)
        return dataclasses.replace(features, deepstack=torch.zeros_like(features.deepstack))

    monkeypatch.setattr(model.visual, "encode_features", without_deepstack)
    moved = _greedy(model, inputs, output_logits=True, return_dict_in_generate=True).logits[0]
    assert (moved - logits).abs().max() > 1e-2


def test_text_only_prompt(compiled, processor):
    model, ref = compiled
    inputs = _prepare(processor, ["Hello, no picture today.", "Hi"], None)
    assert _greedy(model, inputs).tolist() == _greedy(ref, inputs).tolist()


@pytest.mark.slow
def test_language_model_tensor_parallel(compiled, processor):
    """DeepStack inputs are replicated on every rank: TP=2 gives the eager tokens too."""
    _, ref = compiled
    config = {**NPU_CONFIG, "language_model": {**NPU_CONFIG["language_model"], "tensor_parallel_size": 2},
              "device_map": {"visual": [0], "language_model": [1, 2]}}
    model = NPUModelForImageTextToText.from_model(ref, config)
    try:
        inputs = _prepare(processor, ["Describe.", "What is in this picture, in detail?"],
                          [[_image(64, 64, 0)], [_image(160, 224, 1)]])
        assert _greedy(model, inputs).tolist() == _greedy(ref, inputs).tolist()
        assert model.npu_stats.tensor_parallel_size == 2
    finally:
        model.release()
