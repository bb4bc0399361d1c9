"""The VLM visual encoder compiled in patch buckets: parity with eager HF, buckets, padding, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers.vision_utils import get_vision_window_index

from optimum_npu.compile.artifact import ArtifactError
from optimum_npu.compile.weights import load_weights
from optimum_npu.device.spec import resolve_spec
from optimum_npu.models.vlm.tiny import TOKEN_IDS, build_vlm, build_vlm_processor
from optimum_npu.models.vlm.visual_config import NPUVisualConfig, VisualConfigError, VisualModelConfig
from optimum_npu.models.vlm.visual_export import VISUAL_CONFIG_FILE, compile_visual
from optimum_npu.models.vlm.visual_inputs import prepare_image, unpad_output, window_order
from optimum_npu.models.vlm.visual_runtime import VisualInputError, VisualRuntime
from optimum_npu.models.vlm.visual_wrapper import StaticVisual
from optimum_npu.schema import WEIGHTS_FILE
from marks import first_fast

VLMS = ["Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration"]
BUCKETS = [64, 256]
#: (t, h, w) patch grids: 16 and 48 patches -> bucket 64; 140 and 192 (a 2-frame video) -> bucket 256
GRIDS = [(1, 4, 4), (1, 10, 14), (1, 6, 8), (2, 8, 12)]
ATOM = resolve_spec("atom")


@pytest.fixture(scope="module", params=first_fast(VLMS))
def compiled(request, tmp_path_factory):
    model = build_vlm(request.param)
    root = tmp_path_factory.mktemp(request.param)
    compile_visual(model, {"max_seq_len": BUCKETS}, root)
    runtime = VisualRuntime(root, {"max_seq_len": BUCKETS}, ATOM, [0])
    yield model, root, runtime
    runtime.release()


def _eager(model, pixel_values, grids):
    with torch.no_grad():
        return model.model.visual(pixel_values, grid_thw=torch.tensor(grids)).pooler_output


def test_parity_across_buckets(compiled):
    model, _, runtime = compiled
    pixel_values = torch.randn(sum(t * h * w for t, h, w in GRIDS), 1176, generator=torch.Generator().manual_seed(0))
    embeddings, stats = runtime.encode(pixel_values, torch.tensor(GRIDS))
    reference = _eager(model, pixel_values, GRIDS)
    assert embeddings.shape == reference.shape == (sum(t * h * w for t, h, w in GRIDS) // 4, 64)
    torch.testing.assert_close(embeddings, reference, atol=1e-4, rtol=0)
    assert [image.bucket for image in stats.images] == [64, 256, 64, 256]
    assert [image.padded_patches for image in stats.images] == [48, 116, 16, 64]
    assert stats.padding_waste == pytest.approx((48 + 116 + 16 + 64) / (64 + 256 + 64 + 256))
    assert stats.images[1].seconds > stats.images[0].seconds > 0   # the larger bucket costs more


def test_processor_images_parity(compiled):
    """Images of several sizes through the tiny processor: the placeholders match the merged tokens."""
    model, _, runtime = compiled
    processor = build_vlm_processor()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, size, dtype=np.uint8) for size in [(56, 56, 3), (140, 196, 3), (84, 112, 3)]]
    messages = [{"role": "user", "content": [{"type": "image"}] * 3 + [{"type": "text", "text": "what?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    batch = processor(text=[text], images=images, return_tensors="pt")
    embeddings, stats = runtime.encode(batch["pixel_values"], batch["image_grid_thw"])
    torch.testing.assert_close(embeddings, _eager(model, batch["pixel_values"], batch["image_grid_thw"].tolist()),
                               atol=1e-4, rtol=0)
    assert int((batch["input_ids"] == TOKEN_IDS["<|image_pad|>"]).sum()) == embeddings.shape[0]
    assert [image.bucket for image in stats.images] == [64, 256, 64]


def test_window_attention_matters():
    """Qwen2.5-VL: running the window layers with full attention changes the output (the parity test can fail)."""
    model = build_vlm(VLMS[1])
    config = VisualModelConfig.from_hf(model.config)
    grid = (1, 10, 14)
    pixel_values = torch.randn(140, 1176, generator=torch.Generator().manual_seed(1))
    image = prepare_image(pixel_values, grid, 256, config, torch.float32)
    inputs = image.graph_inputs()
    inputs["window_segments"] = inputs["full_segments"]
    with torch.no_grad():
        wrong = unpad_output(StaticVisual(model.model.visual, config)(**inputs), image, 4)
    assert (wrong - _eager(model, pixel_values, [grid])).abs().max() > 0.1


@pytest.mark.parametrize("grid", [(1, 4, 4), (1, 10, 14), (2, 8, 12), (1, 12, 6)])
def test_window_order_matches_hf(grid):
    order, window_of = window_order(*grid, merge=2, window=2)
    reference, cu_windows = get_vision_window_index(torch.tensor([grid]), 2, 56, 14)
    assert torch.equal(order, reference)
    sizes = torch.unique_consecutive(window_of, return_counts=True)[1] * 4
    assert torch.equal(torch.cumsum(sizes, 0), cu_windows[1:].long())


def test_artifact_layout_weights_once(compiled, tmp_path):
    model, root, _ = compiled
    document = json.loads((root / VISUAL_CONFIG_FILE).read_text())
    assert document["graphs"] == ["visual_64", "visual_256"] and document["hf_prefix"] == "model.visual."
    assert sorted(p.name for p in (root / "graphs").iterdir()) == ["visual_256.graph.json", "visual_64.graph.json"]
    weights = load_weights(root / WEIGHTS_FILE)
    visual = dict(model.model.visual.named_parameters())
    assert set(visual) <= set(weights)
    for name, tensor in visual.items():
        assert torch.equal(weights[name], tensor.detach())
    # one more bucket: one more graph, the same weights file
    compile_visual(model, {"max_seq_len": BUCKETS + [1024]}, tmp_path)
    assert (tmp_path / WEIGHTS_FILE).stat().st_size == (root / WEIGHTS_FILE).stat().st_size
    assert len(list((tmp_path / "graphs").iterdir())) == 3


def test_memory_reserved_and_released(compiled):
    _, root, _ = compiled
    device_memory = VisualRuntime(root, BUCKETS, ATOM, [1]).device.memory
    before = device_memory.used
    runtime = VisualRuntime(root, BUCKETS, ATOM, [1])
    assert device_memory.used - before == runtime.memory["weights"] + runtime.memory["workspace"] > 0
    runtime.release()
    assert device_memory.used == before


def test_too_large_image_refused_before_compute(compiled):
    _, _, runtime = compiled
    clock = runtime.device.clock_s
    grids = torch.tensor([[1, 4, 4], [1, 18, 16]])          # 16 patches, then 288 > 256
    with pytest.raises(VisualInputError, match=r"image 1 \(grid 1x18x16\) needs 288 vision patches.*largest "
                                               r"compiled visual bucket.*is 256.*add a bucket >= 288"):
        runtime.encode(torch.randn(304, 1176), grids)
    assert runtime.device.clock_s == clock
    with pytest.raises(VisualInputError, match="adds up to 16 patches but pixel_values has 20 rows"):
        runtime.encode(torch.randn(20, 1176), torch.tensor([[1, 4, 4]]))
    with pytest.raises(VisualInputError, match=r"expected \[patches, 1176\]"):
        runtime.encode(torch.randn(16, 1000), torch.tensor([[1, 4, 4]]))


def test_compile_knobs_cannot_change_at_load(compiled):
    _, root, _ = compiled
    with pytest.raises(ArtifactError, match="compile knobs cannot change"):
        VisualRuntime(root, {"max_seq_len": [64]}, ATOM, [0])


@pytest.mark.parametrize("value, message", [
    (0, r"\[0\] must be >= 1"),
    ([256, 64], r"sorted and unique; use \[64, 256\]"),
    ([64, 64], r"sorted and unique; use \[64\]"),
    ([], "non-empty list"),
    ("64", "integer or a non-empty list"),
    ([64.0], "integer or a non-empty list"),
])
def test_bucket_errors(value, message):
    with pytest.raises(VisualConfigError, match=r"visual\.max_seq_len=.*" + message):
        NPUVisualConfig(max_seq_len=value)


def test_bucket_must_hold_whole_merge_groups():
    config = VisualModelConfig.from_hf(build_vlm(VLMS[0]).config)
    with pytest.raises(VisualConfigError, match=r"\[66\] are not multiples of spatial_merge_size\*\*2 = 4.*"
                                                r"use \[64, 68\]"):
        NPUVisualConfig(max_seq_len=[64, 66]).check_model(config)
    assert NPUVisualConfig(max_seq_len=64).check_model(config).max_seq_len == (64,)


def test_other_knob_errors():
    with pytest.raises(VisualConfigError, match="visual.dtype='int8' is invalid"):
        NPUVisualConfig(dtype="int8")
    with pytest.raises(VisualConfigError, match="tensor_parallel_size=2 is not supported.*use 1"):
        NPUVisualConfig(tensor_parallel_size=2)
    with pytest.raises(VisualConfigError, match=r"unknown visual option\(s\) \['bucket'\]"):
        NPUVisualConfig.coerce({"bucket": 64})
