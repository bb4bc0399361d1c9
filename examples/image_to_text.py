"""Image-to-text on the simulated NPU: compile a vision-language model, save, reload, chat about two images.

    python examples/image_to_text.py                            # a tiny Qwen2-VL built in code
    python examples/image_to_text.py --architecture Qwen2_5_VLForConditionalGeneration
    python examples/image_to_text.py --model path/to/qwen2-vl-checkpoint --visual-buckets 1024,3136,16384 \\
        --max-seq-len 4096 --language-model-devices 1,2

The visual encoder is compiled once per patch bucket (--visual-buckets, in vision patches, i.e.
rows of the processor's pixel_values, before the 2x2 merge: a 448x448 image is 32x32 = 1024
patches of 14 pixels); each image runs on the smallest bucket that holds it. The language model
is compiled like a text decoder (--max-seq-len, --batch-size, --prefill-chunk-size) and may be
split over several devices (--language-model-devices 2,3 = tensor parallelism over 2 devices).
Two images of different sizes are generated with numpy; the printed NPU figures show the bucket
each image ran on, the padding waste and a TTFT that includes the visual encoder.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from transformers import AutoImageProcessor, AutoTokenizer

from optimum_npu import NPUModelForImageTextToText
from optimum_npu.models.vlm.tiny import ARCHITECTURES, save_vlm


def int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def image_size(text: str) -> tuple[int, int]:
    height, width = text.lower().split("x")
    return int(height), int(width)


def synthetic_image(height: int, width: int, seed: int) -> Image.Image:
    """A colour gradient with noise: different sizes give different patch grids."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([255 * y / height, 255 * x / width, np.full((height, width), 128.0)], axis=-1)
    pixels += rng.normal(0, 20, pixels.shape)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def processor_inputs(artifact: Path, conversation: list[dict], images: list[Image.Image]) -> dict:
    """input_ids / attention_mask / pixel_values / image_grid_thw as the model's processor makes them.

    ``AutoProcessor`` needs torchvision for Qwen-VL's video processor; without it the image
    processor and the tokenizer shipped in the artifact do the same work for images.
    """
    try:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(artifact)
        text = processor.apply_chat_template(conversation, add_generation_prompt=True)
        return dict(processor(text=[text], images=images, return_tensors="pt"))
    except (ImportError, AttributeError, ValueError, OSError):
        pass
    tokenizer = AutoTokenizer.from_pretrained(artifact)
    image_processor = AutoImageProcessor.from_pretrained(artifact)
    text = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    vision = image_processor(images=images, return_tensors="pt")
    merge = image_processor.merge_size ** 2
    parts = text.split("<|image_pad|>")            # one placeholder per image -> one token per merged patch
    text = parts[0] + "".join("<|image_pad|>" * (int(grid.prod()) // merge) + rest
                              for grid, rest in zip(vision["image_grid_thw"], parts[1:]))
    return {**tokenizer([text], return_tensors="pt"), **vision}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="HF Qwen2-VL / Qwen2.5-VL checkpoint directory or Hub id, with its "
                                        "processor files (default: build a tiny model in code)")
    parser.add_argument("--architecture", default="Qwen2VLForConditionalGeneration", choices=sorted(ARCHITECTURES),
                        help="tiny model to build when --model is not given")
    parser.add_argument("--output", type=Path, help="where to save the compiled artifact (default: a temp dir)")
    parser.add_argument("--visual-buckets", type=int_list, default=[64, 256, 1024],
                        help="visual max_seq_len buckets in vision patches, comma-separated (multiples of 4)")
    parser.add_argument("--max-seq-len", type=int, default=512, help="language model: prompt + new tokens")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--prefill-chunk-size", type=int, default=64)
    parser.add_argument("--npu", default="atom", help="target NPU preset or JSON spec file")
    parser.add_argument("--visual-device", type=int, default=0, help="device of the visual encoder")
    parser.add_argument("--language-model-devices", type=int_list, default=[1],
                        help="devices of the language model, comma-separated (more than one = tensor parallel)")
    parser.add_argument("--image-sizes", type=lambda t: [image_size(s) for s in t.split(",")],
                        default=[(56, 56), (140, 196)], help="HEIGHTxWIDTH of the two generated images")
    parser.add_argument("--prompt", default="Compare these two pictures.")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="optimum-npu-vlm-"))
    checkpoint = args.model or save_vlm(work / "checkpoint", args.architecture)
    output = args.output or work / "model-npu"
    npu_config = {
        "visual": {"max_seq_len": args.visual_buckets},
        "language_model": {"max_seq_len": args.max_seq_len, "batch_size": args.batch_size,
                           "prefill_chunk_size": args.prefill_chunk_size,
                           "tensor_parallel_size": len(args.language_model_devices)},
        "npu": args.npu,
        "device_map": {"visual": [args.visual_device], "language_model": args.language_model_devices},
    }
    model = NPUModelForImageTextToText.from_pretrained(checkpoint, export=True, npu_config=npu_config)
    model.save_pretrained(output)            # visual/ + language_model/ + processor files + one manifest
    model.release()
    model = NPUModelForImageTextToText.from_pretrained(output)          # reload: no recompilation
    print(f"compiled artifact: {output}")
    print(f"  visual graphs:         {sorted(p.stem.split('.')[0] for p in (output / 'visual' / 'graphs').iterdir())}")
    print(f"  language model graphs: {model.npu_graphs}")

    images = [synthetic_image(h, w, seed) for seed, (h, w) in enumerate(args.image_sizes)]
    conversation = [{"role": "user", "content": [{"type": "image"} for _ in images]
                     + [{"type": "text", "text": args.prompt}]}]
    inputs = processor_inputs(output, conversation, images)
    output_ids = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
    new_tokens = output_ids[0, inputs["input_ids"].shape[1]:]
    grids = [tuple(int(v) for v in grid) for grid in inputs["image_grid_thw"]]
    print(f"images (HxW) {[f'{h}x{w}' for h, w in args.image_sizes]} -> patch grids (t, h, w) {grids}")
    print(f"prompt: {inputs['input_ids'].shape[1]} tokens; generated token ids: {new_tokens.tolist()}")
    tokenizer = AutoTokenizer.from_pretrained(output)
    print(f"generated text: {tokenizer.decode(new_tokens, skip_special_tokens=True)!r}")
    print(model.npu_stats)
    model.release()


if __name__ == "__main__":
    main()
