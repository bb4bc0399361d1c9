"""Vision encoders (ViT, ResNet): parity with eager Transformers per (batch x image size) bucket, the
image-classification pipeline, refusals, the artifact, and the device's convolution cost and batch norm."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from transformers import pipeline

from optimum_npu import NPUAutoModel, NPUAutoModelForImageClassification, NPUModelForImageClassification
from optimum_npu.device.cost import GraphCostModel
from optimum_npu.device.executor import GraphExecutionError
from optimum_npu.device.spec import resolve_spec
from optimum_npu.hub.card import build_model_card
from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.models.encoder.runtime import EncoderInputError
from optimum_npu.models.encoder.tiny_vision import LABELS, build_image_processor, save_vision
from optimum_npu.schema import GRAPH_DIR
from tampering import resign
from vision_fixtures import VISION_CASES


def images(rows: int, size: int, seed: int) -> torch.Tensor:
    return torch.randn(rows, 3, size, size, generator=torch.Generator().manual_seed(seed))


def eager_logits(eager, pixels: torch.Tensor) -> torch.Tensor:
    extra = {"interpolate_pos_encoding": True} if "ViT" in type(eager).__name__ else {}
    with torch.no_grad():
        return eager(pixel_values=pixels, **extra).logits


@pytest.mark.parametrize("architecture", VISION_CASES)
def test_logits_equal_eager_on_several_buckets(vision_models, architecture):
    npu, eager, _ = vision_models[architecture]
    npu.npu_stats.reset()
    for rows, size, bucket in ((1, 32, "image_b1_px32"), (3, 32, "image_b4_px32"), (2, 48, "image_b4_px48"),
                               (1, 48, "image_b1_px48")):
        pixels = images(rows, size, seed=rows * size)
        out = npu(pixel_values=pixels)
        torch.testing.assert_close(out.logits, eager_logits(eager, pixels), atol=1e-4, rtol=0)
        assert npu.npu_stats.calls[-1].bucket.name == bucket and out.logits.shape == (rows, len(LABELS))


def test_a_batch_larger_than_the_largest_bucket_is_split(vision_models):
    npu, eager, _ = vision_models["ResNetForImageClassification"]
    pixels = images(6, 48, seed=6)
    npu.npu_stats.reset()
    torch.testing.assert_close(npu(pixel_values=pixels).logits, eager_logits(eager, pixels), atol=1e-4, rtol=0)
    assert [call.bucket.name for call in npu.npu_stats.calls] == ["image_b4_px48"] * 2   # 4 + 2 rows
    assert npu.npu_stats.padding_waste == pytest.approx(2 / 8) and npu.npu_stats.sequences == 6


@pytest.mark.parametrize("architecture", VISION_CASES)
def test_image_classification_pipeline_equals_eager(vision_models, architecture, monkeypatch):
    npu, eager, root = vision_models[architecture]
    pictures = [Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))
                for seed, (h, w) in enumerate([(40, 56), (32, 32), (64, 48)])]
    for size in (32, 48):   # the processor's size picks the bucket
        processor = build_image_processor(root.parent / f"processor{size}", size)
        npu.npu_stats.reset()
        found = pipeline("image-classification", model=npu, image_processor=processor)(pictures, top_k=3)
        if "ViT" in architecture:   # the eager ViT at 48 px needs its position embeddings interpolated
            monkeypatch.setattr(eager, "forward", functools.partial(type(eager).forward, eager,
                                                                    interpolate_pos_encoding=True))
        expected = pipeline("image-classification", model=eager, image_processor=processor)(pictures, top_k=3)
        for got, want in zip(found, expected, strict=True):
            assert [r["label"] for r in got] == [r["label"] for r in want]
            np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in want], atol=1e-4)
        assert {call.bucket.tokens for call in npu.npu_stats.calls} == {size}


def test_the_loaded_artifact_never_calls_the_hf_forward(vision_models, monkeypatch):
    for architecture in VISION_CASES:
        monkeypatch.setattr(getattr(transformers, architecture), "forward",
                            lambda *a, **k: pytest.fail("HF forward called"))
        for module in ("ViTModel", "ResNetModel", "Conv2d", "BatchNorm2d"):
            owner = getattr(transformers, module, None) or getattr(torch.nn, module)
            monkeypatch.setattr(owner, "forward", lambda *a, **k: pytest.fail(f"{module} forward called"))
    for architecture in VISION_CASES:
        reloaded = NPUModelForImageClassification.from_pretrained(vision_models[architecture][2])
        try:
            assert reloaded(pixel_values=images(2, 48, 1)).logits.shape == (2, 3)
        finally:
            reloaded.release()


def test_bad_images_are_refused_before_any_graph_runs(vision_models, monkeypatch):
    npu, _, _ = vision_models["ViTForImageClassification"]
    monkeypatch.setattr(npu._runtime.engine, "run", lambda *a, **k: pytest.fail("a graph ran"))
    with pytest.raises(EncoderInputError, match=r"40x40 pixels but the compiled image sizes are \[32, 48\].*add 40 "
                                                r"to image_sizes"):
        npu(pixel_values=images(1, 40, 0))
    with pytest.raises(EncoderInputError, match=r"32x48 pixels"):
        npu(pixel_values=torch.zeros(1, 3, 32, 48))
    with pytest.raises(EncoderInputError, match=r"float tensor \[batch, 3, height, width\]"):
        npu(pixel_values=torch.zeros(1, 1, 32, 32))
    with pytest.raises(EncoderInputError, match=r"\['input_ids'\] given to a vision encoder"):
        npu(input_ids=torch.tensor([[1, 2]]))
    with pytest.raises(EncoderInputError, match="NaN or infinite"):
        npu(pixel_values=torch.full((1, 3, 32, 32), float("nan")))


def test_artifact_round_trip_auto_classes_and_card(vision_models):
    npu, _, root = vision_models["ResNetForImageClassification"]
    stored = json.loads((root / "npu_config.json").read_text())
    assert stored["task"] == "image-classification" and stored["inputs"] == ["pixel_values"]
    assert stored["image_sizes"] == [32, 48] and stored["seq_lens"] is None
    assert sorted(p.name for p in (root / GRAPH_DIR).iterdir()) == [
        f"image_b{b}_px{s}.graph.json" for b in (1, 4) for s in (32, 48)]
    assert (root / "preprocessor_config.json").is_file()
    for loader in (NPUAutoModel, NPUAutoModelForImageClassification):
        model = loader.from_pretrained(root)
        try:
            assert type(model) is NPUModelForImageClassification and model.main_input_name == "pixel_values"
            torch.testing.assert_close(model(pixel_values=images(1, 32, 2)).logits,
                                       npu(pixel_values=images(1, 32, 2)).logits, atol=0, rtol=0)
        finally:
            model.release()
    card = str(build_model_card(root, npu.card_section("org/x"), repo_id="org/x"))
    assert "pipeline_tag: image-classification" in card and "AutoImageProcessor.from_pretrained" in card


def test_knobs_of_the_other_modality_are_refused(tmp_path):
    checkpoint = save_vision("ResNetForImageClassification", tmp_path / "hf")
    with pytest.raises(NPUConfigError, match=r"seq_lens=\[64\] applies to text encoders; this model is one of the "
                                             r"vision encoders: give image_sizes"):
        NPUModelForImageClassification.from_pretrained(checkpoint, export=True, npu_config={"seq_lens": [64]},
                                                       compile_cache=False)
    with pytest.raises(NPUConfigError, match="image_sizes=.* lists a size twice"):
        NPUModelForImageClassification.from_pretrained(checkpoint, export=True, npu_config={"image_sizes": [32, 32]},
                                                       compile_cache=False)


def test_tampered_image_sizes_and_training_batch_norm_are_refused(vision_models, tmp_path):
    _, _, root = vision_models["ResNetForImageClassification"]
    copy = tmp_path / "copy"
    NPUModelForImageClassification.from_pretrained(root).save_pretrained(copy)
    document = json.loads((copy / "npu_config.json").read_text())
    (copy / "npu_config.json").write_text(json.dumps({**document, "image_sizes": None, "seq_lens": [32, 48]}))
    resign(copy)
    with pytest.raises(NPUConfigError, match="image_sizes must be set for a image encoder"):
        NPUModelForImageClassification.from_pretrained(copy)
    (copy / "npu_config.json").write_text(json.dumps(document))
    graph_file = copy / GRAPH_DIR / "image_b1_px32.graph.json"
    graph = json.loads(graph_file.read_text())
    norm = next(node for node in graph["nodes"] if node["op"] == "aten.batch_norm.default")
    norm["args"][5] = True   # training: would update the running statistics in place
    graph_file.write_text(json.dumps(graph))
    resign(copy)
    model = NPUModelForImageClassification.from_pretrained(copy)
    try:
        with pytest.raises(GraphExecutionError, match="batch_norm.* in training mode"):
            model(pixel_values=images(1, 32, 0))
    finally:
        model.release()


def test_convolutions_are_costed_as_implicit_gemms(vision_models):
    npu, _, _ = vision_models["ResNetForImageClassification"]
    graph = npu._runtime.engine.graphs["image_b4_px48"]
    cost = GraphCostModel(graph, resolve_spec("atom"), "float32", fuse=False)
    shapes = {spec.name: list(spec.shape) for spec in graph.inputs}
    convs = [node for node in graph.nodes if node.op == "aten.conv2d.default"]
    assert convs and not any(node.op == "aten.add_.Tensor" for node in graph.nodes)   # residual adds out of place
    for node in convs:
        out, weight = node.meta["shape"], shapes[node.args[1]["ref"]]
        expected = 2 * np.prod(out) * weight[1] * weight[2] * weight[3]   # [C_out, C_in, kh, kw]
        assert cost.op_cost(node).flops == expected and cost.op_cost(node).kind == "gemm"
