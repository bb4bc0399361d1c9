"""The audio feed of the encoder family: raw waveforms of a Wav2Vec2 CTC model on ``max_samples`` buckets.

A call of ``N`` samples runs on the smallest ``max_samples`` bucket ``>= N``, padded with zeros. The host
turns the sample mask into the frame mask the graph takes (1 on the frames made of real samples, as
Transformers' ``_get_feature_vector_attention_mask``) and its additive attention bias, so padded frames are
zeroed and never attended to; the logits are cut to the frames of ``N`` samples (``wav2vec2.py``).
"""

from __future__ import annotations

import torch

from optimum_npu.device.buckets import Bucket, smallest_bucket
from optimum_npu.models.encoder.feeds import EncoderInputError, pad_to, refuse_foreign
from optimum_npu.models.encoder.npu_config import NPUEncoderConfig
from optimum_npu.models.encoder.tasks import EncoderTask
from optimum_npu.models.encoder.wav2vec2 import StaticCTC, check_ctc_model, conv_layers, frames, receptive_field
from optimum_npu.models.encoder.wrapper import attention_bias


class AudioFeed:
    """``input_values`` [batch, samples] (float) and ``attention_mask`` [batch, samples] (1 on real samples)."""

    accepted = ("input_values", "attention_mask")
    input_lists = (("input_values", "frame_mask", "frame_bias"),)
    preprocessor = ("AutoProcessor", "processor")
    #: Default buckets: 1, 5 and 10 seconds at 16 kHz.
    DEFAULT_SAMPLES = (16000, 80000, 160000)

    def __init__(self, names: tuple[str, ...], dtype: torch.dtype, layers: list[tuple[int, int]]):
        self.names, self.dtype, self.layers = names, dtype, layers

    @classmethod
    def for_model(cls, task: EncoderTask, names: tuple[str, ...] | None, dtype: torch.dtype,
                  hf_model_or_config) -> "AudioFeed":
        config = getattr(hf_model_or_config, "config", hf_model_or_config)
        check_ctc_model(config)
        return cls(names or cls.input_lists[0], dtype, conv_layers(config))

    @classmethod
    def resolve(cls, config: NPUEncoderConfig, hf_config) -> NPUEncoderConfig:
        """``max_samples`` defaults to 1, 5 and 10 s at 16 kHz; each bucket must make at least one frame."""
        check_ctc_model(hf_config)
        config.single_device("speech models")
        return config.resolve_axis("max_samples", cls.DEFAULT_SAMPLES, receptive_field(conv_layers(hf_config)))

    def wrap(self, hf_model, outputs: tuple[str, ...]) -> StaticCTC:
        return StaticCTC(hf_model)

    def frame_count(self, samples: int) -> int:
        return int(frames(samples, self.layers))

    def example(self, bucket: Bucket) -> tuple[torch.Tensor, ...]:
        count = self.frame_count(bucket.tokens)
        return (torch.zeros(bucket.batch, bucket.tokens, dtype=self.dtype),
                torch.zeros(bucket.batch, count, 1, dtype=self.dtype),
                torch.zeros(bucket.batch, 1, 1, count, dtype=self.dtype))

    def prepare(self, given: dict[str, torch.Tensor | None], lengths: list[int],
                truncation: bool) -> tuple[dict[str, torch.Tensor], int]:
        """The waveforms and masks [n, N] (cut to the largest bucket with ``truncation``) and ``N``."""
        refuse_foreign(given, self.accepted, "a speech recognition model")
        values, mask = given.get("input_values"), given.get("attention_mask")
        if not isinstance(values, torch.Tensor) or values.dim() != 2 or not values.is_floating_point() \
                or values.shape[0] < 1 or not bool(torch.isfinite(values).all()):
            raise EncoderInputError(f"input_values must be a finite float tensor [batch, samples], got "
                                    f"{getattr(values, 'dtype', type(values).__name__)} "
                                    f"{list(getattr(values, 'shape', []))}; pass the feature extractor's "
                                    "return_tensors='pt' output")
        mask = torch.ones(values.shape, dtype=torch.long) if mask is None else mask
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(values.shape) \
                or not bool(((mask == 0) | (mask == 1)).all()):
            raise EncoderInputError(f"attention_mask must be a 0/1 tensor of the shape of input_values "
                                    f"{list(values.shape)}; pass the feature extractor's outputs together")
        width, largest, shortest = values.shape[1], lengths[-1], receptive_field(self.layers)
        if width > largest and not truncation:
            raise EncoderInputError(
                f"the audio has {width} samples but the largest compiled bucket is {largest} (max_samples="
                f"{lengths}): add a bucket >= {width} to max_samples and recompile, split the audio into chunks "
                f"(the pipeline's chunk_length_s), or pass truncation=True to the model")
        width = min(width, largest)
        real = mask[:, :width].sum(-1)
        if int(real.min()) < shortest:
            raise EncoderInputError(f"an input holds {int(real.min())} real samples; the feature encoder needs at "
                                    f"least {shortest} (one frame)")
        return {"input_values": values[:, :width].to(self.dtype), "attention_mask": mask[:, :width].long()}, width

    @staticmethod
    def bucket(buckets: list[Bucket], rows: int, samples: int) -> Bucket:
        return smallest_bucket(buckets, rows, samples)

    def graph_inputs(self, part: dict[str, torch.Tensor], bucket: Bucket) -> dict[str, torch.Tensor]:
        count = self.frame_count(bucket.tokens)
        real_frames = frames(part["attention_mask"].sum(-1), self.layers)                   # [rows]
        mask = (torch.arange(count)[None, :] < real_frames[:, None]).long()                 # [rows, F]
        mask = pad_to(mask, (bucket.batch, count), 0)
        return {"input_values": pad_to(part["input_values"], (bucket.batch, bucket.tokens), 0.0),
                "frame_mask": mask[:, :, None].to(self.dtype), "frame_bias": attention_bias(mask, self.dtype)}

    @staticmethod
    def real_units(part: dict[str, torch.Tensor], samples: int) -> int:
        """Real samples of a part (for the padding waste)."""
        return int(part["attention_mask"].sum())

    def cut(self, output: torch.Tensor, rows: int, samples: int, per_token: bool) -> torch.Tensor:
        """Logits without padded rows, cut to the frames of the call's ``samples`` (as an unpadded run)."""
        return output[:rows, :self.frame_count(samples)] if per_token else output[:rows]
