"""What an encoder's graphs take, per modality: checking a call's inputs, picking its bucket, padding it.

A *feed* turns the tensors a caller passes (``input_ids``/``attention_mask``/``token_type_ids`` for text,
``pixel_values`` for images) into the graph inputs of one bucket. ``runtime.EncoderRuntime`` owns the
rest (splitting a batch, running the bucket on the device, stats), the same for every modality.

- ``TextFeed``: a call of ``L`` tokens runs on the smallest sequence bucket ``>= L``; padded tokens get
  the dtype's most negative attention bias, so real tokens' outputs do not depend on the padding (a causal
  text model, CLIP's text tower, gets the causal mask in the same bias, [B, 1, S, S]).
- ``ImageFeed``: an image runs on the bucket of its own size. Images are not padded spatially (a
  convolution or a patch grid would see the padding); the image processor resizes them to a compiled size.
"""

from __future__ import annotations

import torch

from optimum_npu.device.buckets import Bucket, smallest_bucket
from optimum_npu.models.encoder.npu_config import NPUEncoderConfig
from optimum_npu.models.encoder.tasks import EncoderTask
from optimum_npu.models.encoder.tp_plan import encoder_tp_plan
from optimum_npu.models.encoder.wrapper import StaticEncoder, attention_bias, causal_attention_bias, takes_argument


class EncoderInputError(ValueError):
    """Inputs the compiled encoder cannot take (refused before any compute)."""


def pad_to(tensor: torch.Tensor, shape: tuple[int, ...], fill: float) -> torch.Tensor:
    """``tensor`` padded with ``fill`` at the end of each dimension up to ``shape``."""
    out = torch.full(shape, fill, dtype=tensor.dtype)
    out[tuple(slice(0, size) for size in tensor.shape)] = tensor
    return out


class _HFForward:
    """Feeds whose graph runs the HF model's own forward (``wrapper.StaticEncoder``)."""

    names: tuple[str, ...]
    arguments: dict[str, str] = {}

    def wrap(self, hf_model, outputs: tuple[str, ...]) -> StaticEncoder:
        """The module captured per bucket."""
        return StaticEncoder(hf_model, outputs, self.names, self.arguments, self.fixed_arguments(hf_model))

    @staticmethod
    def fixed_arguments(hf_model) -> dict:
        return {}

    @staticmethod
    def cut(output: torch.Tensor, rows: int, length: int, per_token: bool) -> torch.Tensor:
        """A graph output without the padded rows (and padded tokens when it has one row per token)."""
        return output[:rows, :length] if per_token else output[:rows]


def refuse_foreign(given: dict[str, torch.Tensor | None], accepted: tuple[str, ...], what: str) -> None:
    foreign = sorted(name for name, value in given.items() if value is not None and name not in accepted)
    if foreign:
        raise EncoderInputError(f"{foreign} given to {what}, which takes {list(accepted)}; leave them out")


class TextFeed(_HFForward):
    """Token ids of a text encoder. ``names``: the graph inputs (``input_ids``, ``attention_bias``,
    ``token_type_ids``?); ``pad_token_id`` fills padded tokens; ids must be below ``vocab_size``."""

    accepted = ("input_ids", "attention_mask", "token_type_ids")
    #: The graph input lists a text encoder artifact may hold (with or without token types).
    input_lists = (("input_ids", "attention_bias", "token_type_ids"), ("input_ids", "attention_bias"))
    #: The HF forward argument each graph input is passed as.
    arguments = {"attention_bias": "attention_mask"}
    #: The Transformers auto class of its preprocessor and the pipeline argument that takes it (model card).
    preprocessor = ("AutoTokenizer", "tokenizer")

    @staticmethod
    def resolve(config: NPUEncoderConfig, hf_config) -> NPUEncoderConfig:
        """``seq_lens`` bounded by the position limit (RoBERTa-style models number positions from
        ``pad_token_id + 1``)."""
        encoder_tp_plan(hf_config.model_type, config.tensor_parallel_size)   # refuses a model without a plan
        positions = getattr(hf_config, "max_position_embeddings", None)
        if positions and hf_config.model_type in ("roberta", "xlm-roberta"):
            positions -= (hf_config.pad_token_id or 0) + 1
        return config.resolve(positions)

    def __init__(self, names: tuple[str, ...], dtype: torch.dtype, pad_token_id: int, vocab_size: int,
                 causal: bool = False):
        self.names, self.dtype, self.pad_token_id, self.vocab_size = names, dtype, pad_token_id, vocab_size
        self.causal = causal

    @classmethod
    def for_model(cls, task: EncoderTask, names: tuple[str, ...] | None, dtype: torch.dtype,
                  hf_model_or_config) -> "TextFeed":
        """The feed of a model (``names``: the graph inputs; None: the model's own, at export)."""
        config = getattr(hf_model_or_config, "config", hf_model_or_config)
        if names is None:
            token_types = takes_argument(hf_model_or_config, "token_type_ids")
            names = cls.input_lists[0] if token_types else cls.input_lists[1]
        pad = getattr(config, "pad_token_id", None)
        return cls(names, dtype, pad if isinstance(pad, int) and pad >= 0 else 0, int(config.vocab_size), task.causal)

    def example(self, bucket: Bucket) -> tuple[torch.Tensor, ...]:
        """Zero-filled inputs of one bucket graph, in ``names`` order."""
        shapes = {"input_ids": ((bucket.batch, bucket.tokens), torch.long),
                  "token_type_ids": ((bucket.batch, bucket.tokens), torch.long),
                  "attention_bias": ((bucket.batch, 1, bucket.tokens if self.causal else 1, bucket.tokens),
                                     self.dtype)}
        return tuple(torch.zeros(shapes[name][0], dtype=shapes[name][1]) for name in self.names)

    def prepare(self, given: dict[str, torch.Tensor | None], lengths: list[int],
                truncation: bool) -> tuple[dict[str, torch.Tensor], int]:
        """The call's tensors [n, width] (cut to the largest bucket with ``truncation``) and its width."""
        refuse_foreign(given, self.accepted, "a text encoder")
        input_ids = given.get("input_ids")
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype not in (
                torch.long, torch.int32) or input_ids.shape[0] < 1 or input_ids.shape[1] < 1:
            raise EncoderInputError(f"input_ids must be an integer tensor [batch, tokens] with at least one token, got "
                                    f"{getattr(input_ids, 'dtype', type(input_ids).__name__)} "
                                    f"{list(getattr(input_ids, 'shape', []))}; pass the tokenizer's "
                                    "return_tensors='pt' output")
        if int(input_ids.min()) < 0 or int(input_ids.max()) >= self.vocab_size:
            raise EncoderInputError(f"input_ids holds {int(input_ids.min())}..{int(input_ids.max())}, outside the "
                                    f"model's token ids [0, {self.vocab_size - 1}]; use the model's tokenizer")
        width, largest = input_ids.shape[1], lengths[-1]
        if width > largest and not truncation:
            needed = 1 << (width - 1).bit_length()
            raise EncoderInputError(
                f"the input has {width} tokens but the largest compiled sequence bucket is {largest} "
                f"(seq_lens={lengths}): add a bucket >= {width} (e.g. {needed}, within the model's position "
                f"limit) to seq_lens and recompile, truncate when tokenizing (truncation=True, max_length={largest}), "
                "or pass truncation=True to the model")
        width = min(width, largest)
        tensors = {"input_ids": input_ids,
                   "attention_mask": _given(given.get("attention_mask"), input_ids, "attention_mask", 1),
                   "token_type_ids": _given(given.get("token_type_ids"), input_ids, "token_type_ids", 0)}
        return {name: tensor[:, :width].long() for name, tensor in tensors.items()}, width

    @staticmethod
    def bucket(buckets: list[Bucket], rows: int, width: int) -> Bucket:
        return smallest_bucket(buckets, rows, width)

    def graph_inputs(self, part: dict[str, torch.Tensor], bucket: Bucket) -> dict[str, torch.Tensor]:
        shape = (bucket.batch, bucket.tokens)
        mask = pad_to(part["attention_mask"], shape, 0)
        inputs = {"input_ids": pad_to(part["input_ids"], shape, self.pad_token_id),
                  "attention_bias": (causal_attention_bias if self.causal else attention_bias)(mask, self.dtype),
                  "token_type_ids": pad_to(part["token_type_ids"], shape, 0)}
        return {name: inputs[name] for name in self.names}

    @staticmethod
    def real_units(part: dict[str, torch.Tensor], width: int) -> int:
        """Real tokens of a part (for the padding waste)."""
        return int(part["attention_mask"].sum())


def _given(value: torch.Tensor | None, input_ids: torch.Tensor, name: str, default: int) -> torch.Tensor:
    if value is None:
        return torch.full_like(input_ids, default)
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(input_ids.shape):
        raise EncoderInputError(f"{name} must be a tensor of the shape of input_ids {list(input_ids.shape)}, got "
                                f"{list(getattr(value, 'shape', []))}; pass the tokenizer's outputs together")
    if name == "attention_mask" and not bool(((value == 0) | (value == 1)).all()):
        raise EncoderInputError("attention_mask must hold only 0 (padding) and 1 (token)")
    if name == "token_type_ids" and (int(value.min()) < 0 or int(value.max()) > 1 << 16):
        raise EncoderInputError("token_type_ids must hold small non-negative segment ids, as the tokenizer gives")
    return value


class ImageFeed(_HFForward):
    """Pixels of a vision encoder: ``pixel_values`` [batch, channels, size, size] in the compute dtype."""

    accepted = ("pixel_values",)
    input_lists = (("pixel_values",),)
    preprocessor = ("AutoImageProcessor", "image_processor")
    #: Most image channels a config may state (it is read from an artifact: untrusted).
    MAX_CHANNELS = 16

    def __init__(self, names: tuple[str, ...], dtype: torch.dtype, channels: int):
        self.names, self.dtype, self.channels = names, dtype, channels

    @classmethod
    def for_model(cls, task: EncoderTask, names: tuple[str, ...] | None, dtype: torch.dtype,
                  hf_model_or_config) -> "ImageFeed":
        config = getattr(hf_model_or_config, "config", hf_model_or_config)
        channels = getattr(config, "num_channels", 3)
        if not isinstance(channels, int) or isinstance(channels, bool) or not 1 <= channels <= cls.MAX_CHANNELS:
            raise EncoderInputError(f"config.json: num_channels={str(channels)[:40]!r} must be an integer in "
                                    f"[1, {cls.MAX_CHANNELS}]")
        return cls(names or cls.input_lists[0], dtype, channels)

    @staticmethod
    def resolve(config: NPUEncoderConfig, hf_config) -> NPUEncoderConfig:
        """``image_sizes`` defaults to the model's own ``image_size`` (224 when its config has none)."""
        size = getattr(hf_config, "image_size", None)
        own = size if isinstance(size, int) and not isinstance(size, bool) else 224
        config.single_device("vision encoders")
        return config.resolve_axis("image_sizes", (own,))

    @staticmethod
    def fixed_arguments(hf_model) -> dict:
        """ViT interpolates its position embeddings to each compiled size (a no-op at its own size)."""
        return {"interpolate_pos_encoding": True} if takes_argument(hf_model, "interpolate_pos_encoding") else {}

    def example(self, bucket: Bucket) -> tuple[torch.Tensor, ...]:
        return (torch.zeros(bucket.batch, self.channels, bucket.tokens, bucket.tokens, dtype=self.dtype),)

    def prepare(self, given: dict[str, torch.Tensor | None], lengths: list[int],
                truncation: bool) -> tuple[dict[str, torch.Tensor], int]:
        """The images [n, C, S, S] and their size ``S`` (one of the compiled ``image_sizes``)."""
        refuse_foreign(given, self.accepted, "a vision encoder")
        pixels = given.get("pixel_values")
        if not isinstance(pixels, torch.Tensor) or pixels.dim() != 4 or not pixels.is_floating_point() \
                or pixels.shape[0] < 1 or pixels.shape[1] != self.channels:
            raise EncoderInputError(f"pixel_values must be a float tensor [batch, {self.channels}, height, width], "
                                    f"got {getattr(pixels, 'dtype', type(pixels).__name__)} "
                                    f"{list(getattr(pixels, 'shape', []))}; pass the image processor's "
                                    "return_tensors='pt' output")
        height, width = pixels.shape[2:]
        if height != width or height not in lengths:
            raise EncoderInputError(
                f"the images are {height}x{width} pixels but the compiled image sizes are {lengths} (square, "
                f"image_sizes={lengths}): resize them to one of these with the model's image processor, or add "
                f"{max(height, width)} to image_sizes and recompile")
        if not bool(torch.isfinite(pixels).all()):
            raise EncoderInputError("pixel_values holds NaN or infinite values; pass the image processor's output")
        return {"pixel_values": pixels.to(self.dtype)}, int(height)

    @staticmethod
    def bucket(buckets: list[Bucket], rows: int, size: int) -> Bucket:
        """The smallest batch bucket of exactly this image size."""
        return smallest_bucket([b for b in buckets if b.tokens == size], rows, size)

    def graph_inputs(self, part: dict[str, torch.Tensor], bucket: Bucket) -> dict[str, torch.Tensor]:
        pixels = part["pixel_values"]
        return {"pixel_values": pad_to(pixels, (bucket.batch, *pixels.shape[1:]), 0.0)}

    @staticmethod
    def real_units(part: dict[str, torch.Tensor], size: int) -> int:
        """Real rows x size (the padding waste counts padded images)."""
        return int(part["pixel_values"].shape[0]) * size

