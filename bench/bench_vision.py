"""Vision buckets: a grid of batch buckets versus one batch envelope, side by side, for an image classifier.

A stream of requests of 1 to 40 images (most small: a camera feeding a few frames at a time, fixed seed) is
classified three ways in one run, each request as one ``model(pixel_values=...)`` call:

- ``grid``: compiled for batch_sizes [1, 8, 32] at one image size; each call on the smallest batch bucket
  (a request of more than 32 images is split);
- ``envelope``: compiled for the single batch bucket [32] (one static shape);
- ``eager``: Transformers on the host CPU.

Reported: simulated device time and images/s (cost model), padding waste (padded images), calls, host wall
time, and the largest logit difference to eager. The model is a random-weight ViT-B/16 at 224 px (the shape of
google/vit-base-patch16-224; no download) or, with ``--model tiny``, the tiny ViT of the tests.

    python bench/bench_vision.py [--requests 40] [--model base|tiny] [--npu atom]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch
from transformers import ViTConfig, ViTForImageClassification

from optimum_npu import NPUModelForImageClassification
from optimum_npu.models.encoder.tiny_vision import build_vision

GRID = [1, 8, 32]
ENVELOPE = [32]


def request_sizes(count: int, seed: int = 0) -> list[int]:
    """``count`` request sizes: 60% of 1-4 images, 30% of 5-16, 10% of 17-40."""
    rng = random.Random(seed)
    return [rng.randint(1, 4) if r < 0.6 else rng.randint(5, 16) if r < 0.9 else rng.randint(17, 40)
            for r in (rng.random() for _ in range(count))]


def build(name: str) -> tuple[ViTForImageClassification, int, str]:
    if name == "tiny":
        return build_vision("ViTForImageClassification"), 32, "tiny ViT (2 layers, 32 px)"
    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(image_size=224, patch_size=16, num_labels=1000)).eval()
    model.config.architectures = ["ViTForImageClassification"]
    return model, 224, "random-weight ViT-B/16, 224 px"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=40, help="requests in the stream (default 40)")
    parser.add_argument("--model", choices=["base", "tiny"], default="base", help="ViT-B/16 (default) or tiny")
    parser.add_argument("--npu", default="atom", help="target NPU preset or JSON spec file")
    args = parser.parse_args()
    eager, size, label = build(args.model)
    sizes = request_sizes(args.requests)
    generator = torch.Generator().manual_seed(1)
    stream = [torch.randn(n, 3, size, size, generator=generator) for n in sizes]
    print(f"{label}; {len(stream)} requests, {sum(sizes)} images (sizes min {min(sizes)} / max {max(sizes)}), "
          f"npu={args.npu}, fp32")
    start = time.perf_counter()
    with torch.no_grad():
        expected = [eager(pixel_values=pixels).logits for pixels in stream]
    eager_wall = time.perf_counter() - start
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name, batches in (("grid", GRID), ("envelope", ENVELOPE)):
            model = NPUModelForImageClassification.from_model(
                eager, npu_config={"image_sizes": [size], "batch_sizes": batches, "npu": args.npu},
                compile_cache=Path(work) / "cache")
            start = time.perf_counter()
            found = [model(pixel_values=pixels).logits for pixels in stream]
            wall = time.perf_counter() - start
            diff = max(float((a - b).abs().max()) for a, b in zip(found, expected))
            stats = model.npu_stats
            rows.append((f"{name} {batches}", stats.seconds, stats.padding_waste, len(stats.calls), wall, diff,
                         stats.buckets_used))
            model.release()
    envelope_s = rows[1][1]
    print("| compiled for | simulated s | images/s (simulated) | vs envelope | padding waste | calls | host wall s "
          "| wall vs eager | max logit diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, seconds, waste, calls, wall, diff, _ in rows:
        print(f"| {name} | {seconds:.4f} | {sum(sizes) / seconds:,.0f} | {envelope_s / seconds:.2f}x | {waste:.1%} "
              f"| {calls} | {wall:.1f} | {wall / eager_wall:.2f}x | {diff:.1e} |")
    print(f"| eager Transformers (host CPU) | - | - | - | - | - | {eager_wall:.1f} | 1.00x | 0 |")
    print(f"grid buckets used: {rows[0][6]}")


if __name__ == "__main__":
    main()
