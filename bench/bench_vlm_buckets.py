"""Visual-encoder buckets on the simulated NPU: several patch buckets versus one large bucket.

A Qwen2-VL-7B-shaped vision tower (32 blocks, width 1280, 16 heads, patch 14, merge 2; bf16)
is captured on the ``meta`` device (no weights) once per bucket, and each graph is costed
with ``GraphCostModel`` (its attention is segment-masked aten matmuls, static per bucket, so
``static_seconds`` is the whole call). A mix of image sizes then runs, each image on the
smallest bucket that holds it, with buckets [1024, 3136, 16384] versus [16384] alone.
Printed: per-image bucket and simulated time, total time and padding waste (padded patches /
patches computed). Host-link copies are left out (the same for both).

    python bench/bench_vlm_buckets.py [--npu atom] [--depth 32]
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import Qwen2VLConfig
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

from optimum_npu.device.cost import GraphCostModel
from optimum_npu.device.executor import peak_activation_bytes
from optimum_npu.device.memory import format_bytes
from optimum_npu.device.spec import resolve_spec
from optimum_npu.models.vlm.visual_config import NPUVisualConfig, VisualModelConfig, bucket_graph_name
from optimum_npu.models.vlm.visual_export import capture_visual_graphs

#: Qwen2-VL-7B-Instruct vision tower (its config.json)
QWEN2_VL_7B_VISION = dict(depth=32, embed_dim=1280, hidden_size=3584, mlp_ratio=4, num_heads=16, in_channels=3,
                          patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
#: (label, height px, width px): patches = (h / 14) * (w / 14)
IMAGES = [("thumbnail 224x224", 224, 224), ("photo 448x448", 448, 448), ("screenshot 672x1008", 672, 1008),
          ("document 784x784", 784, 784), ("photo 1008x756", 1008, 756), ("page 1344x1344", 1344, 1344),
          ("chart 392x560", 392, 560), ("poster 1792x1792", 1792, 1792)]
SETUPS = {"buckets [1024, 3136, 16384]": [1024, 3136, 16384], "single bucket [16384]": [16384]}


def bucket_seconds(buckets: list[int], npu: str, depth: int) -> tuple[dict[int, float], dict[int, int]]:
    """Simulated seconds and workspace bytes of one call per bucket (graphs captured on meta)."""
    hf_config = Qwen2VLConfig(vision_config={**QWEN2_VL_7B_VISION, "depth": depth})
    with torch.device("meta"):
        visual = Qwen2VisionTransformerPretrainedModel._from_config(hf_config.vision_config, dtype=torch.bfloat16)
    model = VisualModelConfig.from_hf(hf_config)
    graphs, _ = capture_visual_graphs(visual, model, NPUVisualConfig(max_seq_len=buckets, dtype="bfloat16"))
    spec = resolve_spec(npu)
    seconds = {b: GraphCostModel(graphs[bucket_graph_name(b)], spec, "bfloat16").static_seconds for b in buckets}
    return seconds, {b: peak_activation_bytes(graphs[bucket_graph_name(b)]) for b in buckets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--npu", default="atom")
    parser.add_argument("--depth", type=int, default=QWEN2_VL_7B_VISION["depth"])
    args = parser.parse_args()
    start = time.perf_counter()
    seconds, workspace = bucket_seconds(sorted({b for bs in SETUPS.values() for b in bs}), args.npu, args.depth)
    print(f"Qwen2-VL-7B vision tower ({args.depth} blocks, bf16) on {args.npu}; graphs captured on meta in "
          f"{time.perf_counter() - start:.1f} s")
    for bucket, value in seconds.items():
        print(f"  bucket {bucket:>6} patches: {value * 1e3:9.2f} ms per call, workspace {format_bytes(workspace[bucket])}")
    patches = [(label, (h // 28 * 2) * (w // 28 * 2)) for label, h, w in IMAGES]
    totals = {}
    for setup, buckets in SETUPS.items():
        print(f"\n{setup}")
        used = padded = 0
        total = 0.0
        for label, n in patches:
            bucket = next(b for b in buckets if b >= n)
            used, padded, total = used + bucket, padded + bucket - n, total + seconds[bucket]
            print(f"  {label:<22} {n:>6} patches -> bucket {bucket:>6}  {seconds[bucket] * 1e3:9.2f} ms")
        totals[setup] = total
        print(f"  total {total * 1e3:.1f} ms for {len(patches)} images; padding waste {padded / used:.1%} "
              f"({padded} of {used} patches)")
    (multi, single) = totals.values()
    print(f"\nseveral buckets versus one: {single / multi:.2f}x faster ({multi * 1e3:.1f} ms vs {single * 1e3:.1f} ms)")


if __name__ == "__main__":
    main()
