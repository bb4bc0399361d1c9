"""UNet tensor parallelism: convolutions and group norms split by the compile pass, and a tiny Stable Diffusion
pipeline whose UNet runs on two devices giving the one-device images (fp32, fixed generator)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.resnet import ResnetBlock2D
from safetensors.torch import load_file, save_file
from torch import nn

from optimum_npu import NPUStableDiffusionPipeline, NPUStableDiffusionXLPipeline
from optimum_npu.compile.artifact import write_manifest
from optimum_npu.compile.capture import capture
from optimum_npu.compile.pipeline import run_pipeline
from optimum_npu.compile.tensor_parallel import shard_graph
from optimum_npu.compile.tensor_parallel_plan import TensorParallelError, TensorParallelPlan, WeightSplit, module_regex
from optimum_npu.device.device import DeviceRegistry
from optimum_npu.device.engine import DeviceEngine
from optimum_npu.device.spec import PRESETS
from optimum_npu.device.timeline import DEVICE_HDMA
from optimum_npu.hub.cache_verify import CacheMismatchError
from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.models.diffusion.cache_key import diffusion_cache_key
from optimum_npu.models.diffusion.npu_config import NPUDiffusionConfig
from optimum_npu.models.diffusion.tiny import build_sd_pipeline, build_sdxl_pipeline
from optimum_npu.models.diffusion.unet_parallel import unet_tensor_parallel_plan
from optimum_npu.schema import ALL_REDUCE

TP2 = {"unet": {"resolutions": [[32, 32]], "batch_size": 2, "guidance": [True], "tensor_parallel_size": 2,
               "device": [1, 2]}}
CALL = dict(prompt=["a red cat", "a blue dog"], height=32, width=32, num_inference_steps=2, guidance_scale=5.0,
            output_type="np")


class ConvBlock(nn.Module):
    """A ResNet block's split path: conv (output channels) -> group norm per shard -> SiLU -> conv (input channels)."""

    def __init__(self, groups: int = 4, conv_groups: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 8, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, 8)
        self.conv2 = nn.Conv2d(8, 4, 3, padding=1, groups=conv_groups)

    def forward(self, x):
        return self.conv2(torch.nn.functional.silu(self.norm2(self.conv1(x))))


def _block_plan(size: int) -> TensorParallelPlan:
    col, row = WeightSplit("colwise"), WeightSplit("rowwise")
    return TensorParallelPlan(size, ((module_regex("conv1"), col), (module_regex("norm2"), col),
                                     (module_regex("conv2"), row)), logits=())


def test_convolution_and_group_norm_split_equals_one_device():
    torch.manual_seed(0)
    block, x = ConvBlock().eval(), torch.randn(2, 4, 6, 6)
    graph, weights = capture(block, (x,), "block", ["x"], ["input"])
    compiled = run_pipeline(lambda: ({"block": graph}, weights), _block_plan(2))
    graph = compiled.graphs["block"]
    norm = next(n for n in graph.nodes if n.op == "aten.group_norm.default")
    assert norm.args[1] == 2                                        # 4 groups: 2 per rank
    assert [n.op for n in graph.nodes].count(ALL_REDUCE) == 1       # after conv2 only
    shapes = {s.source: s.shape for s in graph.inputs if s.kind == "weight"}
    assert shapes["conv1.weight"] == (4, 4, 3, 3) and shapes["conv2.weight"] == (4, 4, 3, 3)
    assert not torch.equal(compiled.rank_weights[0]["conv1.weight"], compiled.rank_weights[1]["conv1.weight"])
    assert torch.count_nonzero(compiled.rank_weights[1]["conv2.bias"]) == 0   # the bias is added once
    engine = DeviceEngine(compiled.graphs, PRESETS["atom"], [0, 1], "float32",
                          weights=lambda rank: compiled.rank_weights[rank], weight_bytes=lambda rank: 0,
                          owner="block", registry=DeviceRegistry())
    try:
        out, _ = engine.run("block", {"x": x})
    finally:
        engine.release()
    with torch.no_grad():
        torch.testing.assert_close(out, block(x), atol=1e-5, rtol=0)


def test_group_norm_and_grouped_convolution_refusals():
    x = torch.randn(1, 4, 4, 4)
    graph, _ = capture(ConvBlock(groups=2).eval(), (x,), "block", ["x"], ["input"])
    with pytest.raises(TensorParallelError, match=r"tensor_parallel_size=4 does not divide the 2 groups of the "
                                                  r"group norm reading norm2.weight.*among \[1, 2\]"):
        shard_graph(graph, _block_plan(4))
    graph, _ = capture(ConvBlock(conv_groups=2).eval(), (x,), "block", ["x"], ["input"])
    with pytest.raises(TensorParallelError, match="has groups=2 and a split weight"):
        shard_graph(graph, _block_plan(2))


@pytest.fixture(scope="module")
def eager():
    pipe = build_sd_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def runs(eager, tmp_path_factory):
    """{tp: (images, npu_stats, profiler)} and the TP 2 artifact ("root"): TP 1 compiled in memory; TP 2 saved,
    reloaded on devices 1, 2 and profiled."""
    registry, results = DeviceRegistry(), {}
    config = {"unet": {key: TP2["unet"][key] for key in ("resolutions", "batch_size", "guidance")}}
    pipe = NPUStableDiffusionPipeline.from_pipeline(eager, config, compile_cache=False, device_registry=registry)
    pipe.set_progress_bar_config(disable=True)
    results[1] = (pipe(generator=torch.Generator().manual_seed(0), **CALL).images, pipe.npu_stats, None)
    pipe.release()
    root = results["root"] = tmp_path_factory.mktemp("unet_tp") / "tp2"
    compiled = NPUStableDiffusionPipeline.from_pipeline(eager, TP2, compile_cache=False, device_registry=registry)
    compiled.save_pretrained(root)
    compiled.release()
    pipe = NPUStableDiffusionPipeline.from_pretrained(root, device_registry=registry, npu_config={
        "unet": {"device": [1, 2]}, "profile": True})
    pipe.set_progress_bar_config(disable=True)
    results[2] = (pipe(generator=torch.Generator().manual_seed(0), **CALL).images, pipe.npu_stats, pipe.npu_profile)
    pipe.release()
    return results


def test_unet_tp2_images_equal_tp1_and_eager(eager, runs):
    reference = eager(generator=torch.Generator().manual_seed(0), **CALL).images
    assert np.abs(runs[1][0] - reference).max() < 1e-4
    assert np.abs(runs[2][0] - runs[1][0]).max() < 1e-4
    assert np.std(reference) > 1e-3   # a real image, not a constant


def _row_split_layers(unet) -> int:
    """ResNet blocks (conv2) + transformer-block attentions (to_out) + feed-forwards (output projection)."""
    resnets = sum(type(m) is ResnetBlock2D for m in unet.modules())
    blocks = [m for m in unet.modules() if isinstance(m, BasicTransformerBlock)]
    attentions = sum((b.attn1 is not None) + (b.attn2 is not None) for b in blocks)
    return resnets + attentions + sum(b.ff is not None for b in blocks)


def test_one_all_reduce_per_row_split_layer_in_the_trace(eager, runs):
    _, stats, profiler = runs[2]
    unet_calls = [c for c in profiler.calls if c.device.startswith("npu:1") and c.name.startswith("unet")]
    assert len(unet_calls) == CALL["num_inference_steps"]
    reduces = [e for e in profiler.events if e.device.startswith("npu:1") and e.category == DEVICE_HDMA]
    assert len(reduces) == _row_split_layers(eager.unet) * len(unet_calls) == 20 * 2
    assert all("all_reduce" in e.name for e in reduces) and all(e.duration_s > 0 for e in reduces)
    assert not [e for e in profiler.events if e.device.startswith("npu:0") and e.category == DEVICE_HDMA]


def test_unet_weights_per_device_halve_the_split_part(eager, runs):
    plan = unet_tensor_parallel_plan(eager.unet, 2)
    replicated = split_per_rank = 0
    for name, tensor in eager.unet.state_dict().items():
        split = plan.split_of(name)
        size = tensor.numel() * tensor.element_size()
        if split is None:
            replicated += size
        else:   # a row-split layer's bias stays whole on every rank (zeros but on rank 0)
            split_per_rank += size if split.style == "rowwise" and tensor.dim() == 1 else size // 2
    one, two = runs[1][1].memory, runs[2][1].memory
    assert sorted(d for d, owners in two.items() if "unet" in owners) == [1, 2]
    assert one[0]["unet"]["weights"] > 2 * replicated                 # most of the UNet is split
    assert two[1]["unet"]["weights"] == two[2]["unet"]["weights"] == replicated + split_per_rank
    assert one[0]["unet"]["weights"] - two[1]["unet"]["weights"] > 0.4 * one[0]["unet"]["weights"]


@pytest.mark.slow   # a second (meta) capture of the pipeline
def test_weightless_estimate_under_tp2_equals_the_simulated_call(eager, runs):
    """The planner path (meta capture, same split) charges the same all-reduces as the run."""
    from optimum_npu.models.diffusion.estimate import estimate_pipeline
    from optimum_npu.models.diffusion.real_shapes import weightless_pipeline
    from transformers import CLIPTextModel

    stand_in = weightless_pipeline({"text_encoder": (CLIPTextModel, eager.text_encoder.config.to_dict()),
                                    "unet": dict(eager.unet.config), "vae": dict(eager.vae.config)})
    stand_in.tokenizer = eager.tokenizer
    config = NPUDiffusionConfig.coerce(TP2).resolve((32, 32), 8)
    (estimate,) = estimate_pipeline(stand_in, config, steps=CALL["num_inference_steps"])
    stats = runs[2][1]
    assert estimate.seconds_by_component == pytest.approx(stats.seconds_by_component, rel=1e-9)
    assert estimate.components["unet"].devices == 2
    assert estimate.components["unet"].memory["weights"] == stats.memory[1]["unet"]["weights"]
    # a tiny UNet is latency bound: its 20 all-reduces per step cost more than the halved arithmetic saves
    assert estimate.seconds_by_component["unet"] > 2 * runs[1][1].seconds_by_component["unet"]


def test_compile_cache_hit_check_compares_every_rank_shard(eager, runs, tmp_path):
    entry = shutil.copytree(runs["root"], tmp_path / "entry")
    config = NPUDiffusionConfig.coerce(TP2).resolve((32, 32), 8)
    key = diffusion_cache_key(eager, NPUStableDiffusionPipeline.pipeline_kind, config, False)
    key.verify_hit(entry)   # the stored shards are the cuts of the pipeline's weights
    shard = entry / "unet" / "model-tp1-of-2.safetensors"
    weights = load_file(shard)
    weights["down_blocks.0.resnets.0.conv2.weight"] += 1   # a poisoned shard, re-signed
    save_file(weights, shard)
    write_manifest(entry)
    with pytest.raises(CacheMismatchError, match="conv2.weight"):
        key.verify_hit(entry)


def test_tp_size_that_does_not_divide_the_groups_is_refused_before_compiling(eager):
    config = {"unet": {"resolutions": [[32, 32]], "tensor_parallel_size": 3, "device": [1, 2, 3]}}
    with pytest.raises(NPUConfigError, match=r"tensor_parallel_size=3 does not divide the UNet.*norm_num_groups: "
                                             r"\[2\].*attention heads: \[8\].*among \[1, 2\]"):
        NPUStableDiffusionPipeline.from_pipeline(eager, config, compile_cache=False)


@pytest.mark.slow   # two SDXL compiles
def test_sdxl_unet_tp2_equals_tp1():
    eager = build_sdxl_pipeline()
    eager.set_progress_bar_config(disable=True)
    images = {}
    for tp in (1, 2):
        config = {"unet": {"resolutions": [[32, 32]], "batch_size": 2, "tensor_parallel_size": tp,
                           "device": list(range(1, tp + 1))}}
        pipe = NPUStableDiffusionXLPipeline.from_pipeline(eager, config, compile_cache=False,
                                                          device_registry=DeviceRegistry())
        pipe.set_progress_bar_config(disable=True)
        try:
            images[tp] = pipe(generator=torch.Generator().manual_seed(0), **CALL).images
        finally:
            pipe.release()
    assert np.abs(images[2] - images[1]).max() < 1e-4
    assert np.abs(images[1] - eager(generator=torch.Generator().manual_seed(0), **CALL).images).max() < 1e-4
