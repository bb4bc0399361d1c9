"""Images in chat requests for a vision-language artifact: base64 data URLs decoded, run through the
artifact's image processor, and the image placeholder of the chat template expanded to one token per
merged patch, as the model's processor does.

Only ``data:image/...;base64,...`` URLs are taken (the server never fetches a URL); the image's declared
size is bounded before its pixels are decoded.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass

import torch
from PIL import Image, UnidentifiedImageError
from transformers import AutoImageProcessor

from optimum_npu.serving.sampling_params import InvalidParameterError
from optimum_npu.serving.tokenizer import SharedTokenizer

#: Largest image accepted, in pixels (the processor then resizes it within the model's own limit).
MAX_IMAGE_PIXELS = 4096 * 4096
DATA_URL_PREFIX = "data:image/"


@dataclass(frozen=True)
class VisionInputs:
    """The image processor's outputs for one prompt's images."""

    pixel_values: torch.Tensor      # [total patches, patch_dim]
    image_grid_thw: torch.Tensor    # [images, 3]


def decode_image(url: str, param: str) -> Image.Image:
    """A base64 data URL as an RGB image (``InvalidParameterError`` naming ``param`` otherwise)."""
    if not url.startswith(DATA_URL_PREFIX) or ";base64," not in url:
        raise InvalidParameterError(param, "image_url must be a base64 data URL (data:image/png;base64,...); this "
                                           "server does not fetch URLs")
    try:
        data = base64.b64decode(url.split(";base64,", 1)[1], validate=True)
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise InvalidParameterError(param, f"the image is {width}x{height} pixels, more than {MAX_IMAGE_PIXELS}")
        return image.convert("RGB")
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as err:
        if isinstance(err, InvalidParameterError):
            raise
        raise InvalidParameterError(param, f"the image_url data is not a readable image ({err})") from None


class ImagePrompts:
    """Builds a VLM prompt's token ids and ``VisionInputs`` from rendered chat text and images.

    Args:
        artifact_dir: the artifact (its image processor files).
        tokenizer: the model's tokenizer.
        image_token_id: the placeholder token id the visual embeddings replace (config.json's ``image_token_id``).
        visual: the model's visual runtime (checks the images fit its compiled buckets).
    """

    def __init__(self, artifact_dir, tokenizer: SharedTokenizer, image_token_id: int, visual):
        self.image_processor = AutoImageProcessor.from_pretrained(artifact_dir)
        self.tokenizer = tokenizer
        self.placeholder = tokenizer.tokenizer.convert_ids_to_tokens(image_token_id)
        self.visual = visual

    def prepare(self, text: str, images: list[Image.Image]) -> tuple[list[int], VisionInputs | None]:
        """Token ids of the rendered prompt (placeholders expanded) and the images' processor outputs."""
        if not images:
            return self.tokenizer.encode_chat(text), None
        parts = text.split(self.placeholder)
        if len(parts) != len(images) + 1:
            raise InvalidParameterError("messages", f"the chat template placed {len(parts) - 1} image placeholders "
                                                    f"for {len(images)} images")
        vision = self.image_processor(images=images, return_tensors="pt")
        inputs = VisionInputs(vision["pixel_values"], vision["image_grid_thw"])
        try:
            self.visual.check(inputs.pixel_values, inputs.image_grid_thw)
        except ValueError as err:
            raise InvalidParameterError("messages", str(err)) from None
        merge = self.image_processor.merge_size ** 2
        text = parts[0] + "".join(self.placeholder * (int(grid.prod()) // merge) + rest
                                  for grid, rest in zip(inputs.image_grid_thw, parts[1:]))
        return self.tokenizer.encode_chat(text), inputs
