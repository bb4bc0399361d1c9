"""CLIP: two encoder towers in one artifact; features, logits and the zero-shot pipeline equal eager Transformers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from safetensors.torch import save_file
from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel, pipeline

from optimum_npu import NPUAutoModel, NPUCLIPModel
from optimum_npu.compile.artifact import ArtifactError
from optimum_npu.hub.card import build_model_card
from optimum_npu.models.clip.export import LOGIT_SCALE_FILE
from optimum_npu.models.clip.tiny import save_clip
from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.models.encoder.tiny import VOCAB
from tampering import resign
from vision_fixtures import compile_save_reload

KNOBS = {"text": {"seq_lens": [8, 16], "batch_sizes": [1, 4]}, "vision": {"batch_sizes": [1, 2]}}
LABELS = ["a cat", "a dog on the road", "a big red car", "the sun in the sky at night"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """(reloaded NPU CLIP, eager CLIP, artifact dir, checkpoint dir), compiled once for this module."""
    root = tmp_path_factory.mktemp("clip")
    checkpoint = save_clip(root / "hf")
    model = compile_save_reload(NPUCLIPModel, checkpoint, KNOBS, root / "npu")
    yield model, CLIPModel.from_pretrained(checkpoint).eval(), root / "npu", checkpoint
    model.release()


def texts(rows: int, width: int, seed: int) -> dict[str, torch.Tensor]:
    """[CLS] words... [SEP] rows of different lengths, right-padded with [PAD] (0)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.zeros(rows, width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row in range(rows):
        length = max(3, width - 2 * row)
        ids[row, :length] = torch.randint(5, len(VOCAB), (length,), generator=generator)
        ids[row, 0], ids[row, length - 1] = 2, 3
        mask[row, :length] = 1
    return {"input_ids": ids, "attention_mask": mask}


def test_text_and_image_features_equal_eager_on_several_buckets(clip):
    npu, eager, _, _ = clip
    npu.npu_stats.reset()
    for rows, width, bucket in ((1, 5, "encoder_b1_s8"), (3, 8, "encoder_b4_s8"), (2, 14, "encoder_b4_s16"),
                                (6, 16, "encoder_b4_s16")):
        batch = texts(rows, width, seed=rows + width)
        with torch.no_grad():
            expected = eager.get_text_features(**batch)
        found = npu.get_text_features(**batch)
        torch.testing.assert_close(found.pooler_output, expected.pooler_output, atol=1e-4, rtol=0)
        real = batch["attention_mask"].bool()
        torch.testing.assert_close(found.last_hidden_state[real], expected.last_hidden_state[real], atol=1e-4, rtol=0)
        assert npu.npu_stats.text.calls[-1].bucket.name == bucket
    for rows, bucket in ((1, "image_b1_px32"), (2, "image_b2_px32"), (3, "image_b1_px32")):   # 3 = 2 + 1
        pixels = torch.randn(rows, 3, 32, 32, generator=torch.Generator().manual_seed(rows))
        with torch.no_grad():
            expected = eager.get_image_features(pixel_values=pixels)
        found = npu.get_image_features(pixels)
        torch.testing.assert_close(found.pooler_output, expected.pooler_output, atol=1e-4, rtol=0)
        torch.testing.assert_close(found.last_hidden_state, expected.last_hidden_state, atol=1e-4, rtol=0)
        assert npu.npu_stats.vision.calls[-1].bucket.name == bucket


def test_logits_equal_eager_and_padding_does_not_change_a_text(clip):
    npu, eager, _, _ = clip
    batch, pixels = texts(3, 9, seed=7), torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        expected = eager(**batch, pixel_values=pixels)
    found = npu(**batch, pixel_values=pixels)
    for name in ("logits_per_image", "logits_per_text", "text_embeds", "image_embeds"):
        torch.testing.assert_close(found[name], expected[name], atol=1e-4, rtol=0, msg=name)
    alone = texts(1, 5, seed=3)   # causal text tower: padding after the text leaves its embedding unchanged
    padded = {name: torch.cat([t, torch.zeros(1, 9, dtype=t.dtype)], 1) for name, t in alone.items()}
    torch.testing.assert_close(npu.get_text_features(**padded).pooler_output,
                               npu.get_text_features(**alone).pooler_output, atol=1e-5, rtol=0)
    assert [call.bucket.tokens for call in npu.npu_stats.text.calls[-2:]] == [16, 8]


def test_zero_shot_pipeline_equals_eager(clip):
    npu, eager, root, _ = clip
    tokenizer, processor = AutoTokenizer.from_pretrained(root), AutoImageProcessor.from_pretrained(root)
    pictures = [Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40 + 8 * seed, 50, 3), dtype=np.uint8))
                for seed in range(3)]
    found = pipeline("zero-shot-image-classification", model=npu, tokenizer=tokenizer,
                     image_processor=processor)(pictures, candidate_labels=LABELS)
    expected = pipeline("zero-shot-image-classification", model=eager, tokenizer=tokenizer,
                        image_processor=processor)(pictures, candidate_labels=LABELS)
    for got, want in zip(found, expected, strict=True):
        assert [r["label"] for r in got] == [r["label"] for r in want]
        np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in want], atol=1e-4)


def test_the_loaded_artifact_never_calls_the_hf_forward(clip, monkeypatch):
    _, _, root, _ = clip
    for name in ("CLIPModel", "CLIPTextModelWithProjection", "CLIPVisionModelWithProjection", "CLIPTextModel",
                 "CLIPVisionModel", "CLIPEncoderLayer", "CLIPAttention"):
        owner = getattr(transformers.models.clip.modeling_clip, name)
        monkeypatch.setattr(owner, "forward", lambda *a, _n=name, **k: pytest.fail(f"{_n}.forward called"))
    model = NPUAutoModel.from_pretrained(root, npu_config={"profile": True, "device": 1})
    try:
        assert type(model) is NPUCLIPModel
        out = model(**texts(2, 6, 1), pixel_values=torch.zeros(1, 3, 32, 32))
        assert out.logits_per_image.shape == (1, 2)
        assert {d.name.split()[0] for t in (model.text_tower, model.vision_tower)
                for d in t._runtime.engine.devices} == {"npu:1"}
        # one profiler for both towers: it holds every op of both calls
        assert sum(model.npu_profile.totals().values()) == pytest.approx(model.npu_stats.seconds, rel=1e-6)
    finally:
        model.release()


def test_artifact_layout_card_and_tampering(clip, tmp_path):
    npu, _, root, _ = clip
    stored = json.loads((root / "npu_config.json").read_text())
    assert stored["family"] == "clip" and stored["submodules"] == {"text": "text_model", "vision": "vision_model"}
    assert stored["text"] == {"seq_lens": [8, 16], "batch_sizes": [1, 4]}
    assert stored["vision"] == {"image_sizes": [32], "batch_sizes": [1, 2]}
    assert json.loads((root / "vision_model" / "npu_config.json").read_text())["task"] == "image-embedding"
    card = str(build_model_card(root, npu.card_section("org/x"), repo_id="org/x"))
    assert "pipeline_tag: zero-shot-image-classification" in card and "NPUCLIPModel.from_pretrained" in card
    copy = tmp_path / "copy"
    npu.save_pretrained(copy)
    tower = json.loads((copy / "text_model" / "npu_config.json").read_text())
    (copy / "text_model" / "npu_config.json").write_text(json.dumps({**tower, "batch_sizes": [1]}))
    resign(copy)
    with pytest.raises(NPUConfigError, match="graphs=.* must be"):   # the tower's own checks
        NPUCLIPModel.from_pretrained(copy)
    (copy / "text_model" / "npu_config.json").write_text(json.dumps(tower))
    save_file({"logit_scale": torch.tensor([1.0, 2.0])}, str(copy / LOGIT_SCALE_FILE))
    resign(copy)
    with pytest.raises(ArtifactError, match="one finite scalar 'logit_scale'"):
        NPUCLIPModel.from_pretrained(copy)
    with pytest.raises(NPUConfigError, match=r"unknown CLIP knobs \['seq_lens'\]"):
        NPUCLIPModel.from_pretrained(clip[3], export=True, npu_config={"seq_lens": [8]}, compile_cache=False)
