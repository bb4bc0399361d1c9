"""The feed of Whisper's encoder graphs for the encoder family's ``EncoderRuntime``: one fixed log-mel window.

Whisper's encoder takes the feature extractor's padded window ``input_features [batch, mels, frames]`` (30 s, or
the window the model was built for): there is no length to bucket, only the batch. A call of ``n`` windows runs on
the smallest encoder batch bucket ``>= n`` (rows beyond the largest bucket run in further calls, as for every
encoder), padded with zero windows that are discarded; the output keeps every encoder position of the window.
"""

from __future__ import annotations

import torch

from optimum_npu.device.buckets import Bucket, smallest_bucket
from optimum_npu.models.encoder.feeds import EncoderInputError, pad_to, refuse_foreign


class MelWindowFeed:
    """``input_features`` [batch, ``mels``, ``frames``] of a fixed window, checked and padded to a batch bucket."""

    accepted = ("input_features",)
    names = ("input_features",)

    def __init__(self, mels: int, frames: int, dtype: torch.dtype):
        self.mels, self.frames, self.dtype = mels, frames, dtype

    def prepare(self, given: dict[str, torch.Tensor | None], lengths: list[int],
                truncation: bool = False) -> tuple[dict[str, torch.Tensor], int]:
        """The windows in the compute dtype, and the window's frame count (every call has the same)."""
        refuse_foreign(given, self.accepted, "Whisper's encoder")
        features = given.get("input_features")
        if not isinstance(features, torch.Tensor) or features.dim() != 3 or features.shape[0] < 1 \
                or tuple(features.shape[1:]) != (self.mels, self.frames):
            raise EncoderInputError(f"input_features must be [batch, {self.mels}, {self.frames}] (the feature "
                                    f"extractor's padded window), got {list(getattr(features, 'shape', []))}; use "
                                    "the model's feature extractor (WhisperFeatureExtractor) with return_tensors='pt'")
        return {"input_features": features.to(self.dtype)}, self.frames

    @staticmethod
    def bucket(buckets: list[Bucket], rows: int, frames: int) -> Bucket:
        return smallest_bucket(buckets, rows, frames)

    def graph_inputs(self, part: dict[str, torch.Tensor], bucket: Bucket) -> dict[str, torch.Tensor]:
        return {"input_features": pad_to(part["input_features"], (bucket.batch, self.mels, self.frames), 0.0)}

    @staticmethod
    def real_units(part: dict[str, torch.Tensor], frames: int) -> int:
        """Real frames of a part (every window is whole: rows x frames; the padding waste is in padded rows)."""
        return part["input_features"].shape[0] * frames

    @staticmethod
    def cut(output: torch.Tensor, rows: int, frames: int, per_token: bool) -> torch.Tensor:
        """The encoder output [rows, positions, E] without the padded rows (every position of the window kept)."""
        return output[:rows]
