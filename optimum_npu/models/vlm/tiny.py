"""Tiny Qwen2-VL / Qwen2.5-VL / Qwen3-VL models and a processor built in code (nothing is downloaded).

The vision tower is 2 blocks of width 32 (2 heads), patch 14, temporal patch 2, spatial
merge 2; the language model is 2 layers of width 64. Qwen3-VL (as the real checkpoints: patch
16) has 3 vision blocks, DeepStack features from blocks 0 and 1, a learned 6x6 position grid,
and a 3-layer Qwen3-style (q/k norm) language model. The tokenizer is the byte-level one
of ``optimum_npu.models.tiny`` plus the Qwen chat/vision special tokens. The image
processor is the PIL backend of ``Qwen2VLImageProcessor`` (it needs ``pillow``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, PreTrainedModel, PreTrainedTokenizerFast

from optimum_npu.models.tiny import SPECIAL_TOKENS as BASE_SPECIAL_TOKENS

ARCHITECTURES = {"Qwen2VLForConditionalGeneration": "qwen2_vl",
                 "Qwen2_5_VLForConditionalGeneration": "qwen2_5_vl",
                 "Qwen3VLForConditionalGeneration": "qwen3_vl"}
#: Vision patch side of each tiny model (the image processor must cut images the same way).
PATCH_SIZES = {"Qwen3VLForConditionalGeneration": 16}
VISION_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>"]
#: Byte-level vocabulary (specials first, then 256 bytes), then the vision/chat tokens.
_FIRST_VISION_ID = len(BASE_SPECIAL_TOKENS) + 256
TOKEN_IDS = {tok: _FIRST_VISION_ID + i for i, tok in enumerate(VISION_TOKENS)}
VOCAB_SIZE = 272  # >= every id above, a multiple of 16

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_vlm_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer with <pad>=0, <s>=1, </s>=2 and the Qwen vision/chat special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {tok: i for i, tok in enumerate(BASE_SPECIAL_TOKENS)}
    vocab.update({ch: len(BASE_SPECIAL_TOKENS) + i for i, ch in enumerate(sorted(ByteLevel.alphabet()))})
    vocab.update(TOKEN_IDS)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>",
                                        eos_token="<|im_end|>", padding_side="left",
                                        additional_special_tokens=VISION_TOKENS)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_vlm_image_processor(max_pixels: int = 448 * 448, patch_size: int = 14):
    """PIL ``Qwen2VLImageProcessor`` (patch 14, temporal 2, merge 2): images are resized to
    multiples of 2 x ``patch_size`` pixels with an area between 56x56 and ``max_pixels``."""
    from transformers import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(size={"shortest_edge": 56 * 56, "longest_edge": max_pixels},
                                    patch_size=patch_size, temporal_patch_size=2, merge_size=2)


def build_vlm_processor(max_pixels: int = 448 * 448, patch_size: int = 14):
    """A ``Qwen2VLProcessor`` for images: the PIL image processor + the tokenizer above.

    Without torchvision, transformers cannot resolve the video processor's class, so the
    processor is built with ``video_processor=None`` past that class check (images only;
    ``save_pretrained`` of this object fails: save its parts, as ``save_vlm`` does).
    """
    from unittest import mock

    from transformers import Qwen2VLProcessor
    from transformers.processing_utils import ProcessorMixin

    check = ProcessorMixin.check_argument_for_proper_class

    def skip_missing_video(self, name, arg):
        return None if name == "video_processor" and arg is None else check(self, name, arg)

    with mock.patch.object(ProcessorMixin, "check_argument_for_proper_class", skip_missing_video):
        return Qwen2VLProcessor(image_processor=build_vlm_image_processor(max_pixels, patch_size),
                                tokenizer=build_vlm_tokenizer(), video_processor=None, chat_template=CHAT_TEMPLATE)


def vlm_config_kwargs(architecture: str) -> dict:
    """Config kwargs of the tiny model (vision depth 2 width 32; text 2 layers width 64)."""
    text = dict(vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                pad_token_id=0, bos_token_id=1, eos_token_id=TOKEN_IDS["<|im_end|>"], tie_word_embeddings=False)
    # initializer_range 0.2 (HF default 0.02): attention then shapes the outputs visibly, so a parity test
    # catches a wrong mask or window (with 0.02 a wrong mask moves the outputs by < 1e-3)
    vision = dict(depth=2, num_heads=2, patch_size=14, temporal_patch_size=2, spatial_merge_size=2, in_channels=3,
                  initializer_range=0.2)
    if architecture == "Qwen2VLForConditionalGeneration":
        vision.update(embed_dim=32, hidden_size=64, mlp_ratio=2)
    elif architecture == "Qwen2_5_VLForConditionalGeneration":
        # a window of 56 pixels = 2x2 merged tokens = 16 patches; block 1 attends fully
        vision.update(hidden_size=32, out_hidden_size=64, intermediate_size=48, window_size=56,
                      fullatt_block_indexes=[1])
    elif architecture == "Qwen3VLForConditionalGeneration":
        # DeepStack: blocks 0 and 1 feed the first two decoder layers; a 6x6 learned position grid is
        # interpolated to every image (grids up to 20x20 patches here); q/k norm in the text model
        vision.update(depth=3, hidden_size=32, out_hidden_size=64, intermediate_size=48, patch_size=16,
                      num_position_embeddings=36, deepstack_visual_indexes=[0, 1], hidden_act="gelu_pytorch_tanh")
        text.update(num_hidden_layers=3, head_dim=16, rms_norm_eps=1e-6)
    else:
        raise ValueError(f"architecture={architecture!r} has no tiny VLM; choose one of {sorted(ARCHITECTURES)}")
    return dict(text_config=text, vision_config=vision, image_token_id=TOKEN_IDS["<|image_pad|>"],
                video_token_id=TOKEN_IDS["<|video_pad|>"], vision_start_token_id=TOKEN_IDS["<|vision_start|>"],
                vision_end_token_id=TOKEN_IDS["<|vision_end|>"], tie_word_embeddings=False)


def build_vlm(architecture: str = "Qwen2VLForConditionalGeneration", seed: int = 0, **overrides) -> PreTrainedModel:
    """A randomly initialised tiny VLM (fp32, eval mode, eager attention)."""
    from transformers import AutoConfig

    kwargs = vlm_config_kwargs(architecture)
    kwargs.update(overrides)
    config = AutoConfig.for_model(ARCHITECTURES[architecture], architectures=[architecture], **kwargs)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32, attn_implementation="eager")
    return model.eval()


def save_vlm(path: str | Path, architecture: str = "Qwen2VLForConditionalGeneration", seed: int = 0,
             **overrides) -> Path:
    """Builds a tiny VLM and saves it with its image processor and tokenizer (chat template included)."""
    path = Path(path)
    build_vlm(architecture, seed, **overrides).save_pretrained(path)
    build_vlm_image_processor(patch_size=PATCH_SIZES.get(architecture, 14)).save_pretrained(path)
    build_vlm_tokenizer().save_pretrained(path)
    return path
