"""Image classification on the simulated NPU: compile a ViT or ResNet into (batch x image size) buckets, classify.

    python examples/image_classification.py                              # a tiny random ViT built in code
    python examples/image_classification.py --architecture ResNetForImageClassification
    python examples/image_classification.py --model path/to/vit-checkpoint --image-sizes 224 --batch-sizes 1,8,32

The image processor resizes each picture to a compiled size; the images of a call run on the bucket of that
size, on the smallest batch bucket that holds them (a larger batch is split). ``npu_stats`` reports the
buckets used, the padding waste (padded images) and the simulated time. With ``--compare`` the eager
Transformers pipeline runs the same pictures and the top labels are printed side by side.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

from optimum_npu import NPUModelForImageClassification
from optimum_npu.models.encoder.tiny_vision import save_vision


def int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def pictures(count: int, seed: int = 0) -> list[Image.Image]:
    """Random RGB pictures of assorted sizes (the processor resizes them)."""
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (int(rng.integers(24, 96)), int(rng.integers(24, 96)), 3),
                                         dtype=np.uint8)) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="an HF image classification checkpoint directory or Hub id (default: a tiny "
                                        "random model built in code)")
    parser.add_argument("--architecture", default="ViTForImageClassification",
                        choices=["ViTForImageClassification", "ResNetForImageClassification"],
                        help="the tiny model's class when no --model is given")
    parser.add_argument("--image-sizes", type=int_list,
                        help="image size buckets (default: the model's image_size, or 224; 32 for the tiny model)")
    parser.add_argument("--batch-sizes", type=int_list, default=[1, 4], help="batch buckets (default 1,4)")
    parser.add_argument("--images", type=int, default=6, help="how many pictures to classify (default 6)")
    parser.add_argument("--npu", default="atom", help="target NPU preset or JSON spec file")
    parser.add_argument("--compare", action="store_true", help="also run the eager Transformers pipeline")
    parser.add_argument("--output", type=Path, help="where to save the compiled artifact (default: a temp dir)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="optimum-npu-"))
    checkpoint = Path(args.model) if args.model else save_vision(args.architecture, work / "tiny")
    sizes = args.image_sizes or ([] if args.model else [32])   # the tiny model's processor resizes to 32 px
    knobs = {"batch_sizes": args.batch_sizes, "npu": args.npu, **({"image_sizes": sizes} if sizes else {})}
    compiled = NPUModelForImageClassification.from_pretrained(checkpoint, export=True, npu_config=knobs)
    target = args.output or work / "image-classifier-npu"
    compiled.save_pretrained(target)
    compiled.release()
    model = NPUModelForImageClassification.from_pretrained(target)   # the saved artifact, verified
    processor = AutoImageProcessor.from_pretrained(target)
    print(f"compiled {len(model.npu_graphs)} bucket graphs ({', '.join(model.npu_graphs)}) -> {target}")
    images = pictures(args.images)
    batch = max(args.batch_sizes)   # the pipeline hands the model batches of this many images
    results = pipeline("image-classification", model=model, image_processor=processor)(images, top_k=1,
                                                                                         batch_size=batch)
    eager_results = [None] * len(images)
    if args.compare:
        eager = AutoModelForImageClassification.from_pretrained(checkpoint).eval()
        if "interpolate_pos_encoding" in eager.forward.__code__.co_varnames:   # ViT at a size of its choosing
            eager.forward = functools.partial(type(eager).forward, eager, interpolate_pos_encoding=True)
        eager_results = pipeline("image-classification", model=eager, image_processor=processor)(images, top_k=1,
                                                                                                 batch_size=batch)
    for index, (image, found, expected) in enumerate(zip(images, results, eager_results)):
        line = f"image {index} ({image.width}x{image.height}) -> {found[0]['label']} ({found[0]['score']:.4f})"
        if expected is not None:
            line += f" | eager: {expected[0]['label']} ({expected[0]['score']:.4f})"
        print(line)
    print(model.npu_stats)
    model.release()


if __name__ == "__main__":
    main()
