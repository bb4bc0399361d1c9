"""Wav2Vec2 for CTC as captured per (batch, samples) bucket, with the frame mask computed on the host.

``StaticCTC.forward(input_values [B, N], frame_mask [B, F, 1], frame_bias [B, 1, 1, F]) -> (logits [B, F, V],)``
runs the HF model's own modules (feature encoder, feature projection, positional convolution, encoder
layers, LM head; weights keep their checkpoint names) in the order of ``Wav2Vec2ForCTC.forward``. What
Transformers computes inside its forward from the sample mask (the frame lengths, the zeroing of padded
frames by an in-place masked write, the attention mask) is done here without in-place writes: the host
gives the frame mask (1 on the frames of real samples) and its additive attention bias.

With the per-frame layer-norm feature encoder (``feat_extract_norm="layer"``, e.g. the ``*-lv60`` models)
a frame depends only on its own samples, so the frames of real samples are those an unpadded run gives:
padding a call to a larger ``max_samples`` bucket does not change its logits. The group-norm encoder
(``"group"``, wav2vec2-base) normalises over the whole padded input, so it is refused.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

#: Longest feature-encoder description accepted from a config (it is read from an artifact: untrusted).
MAX_CONV_LAYERS = 16


class UnsupportedAudioModel(ValueError):
    """A Wav2Vec2 configuration whose outputs would depend on the padding of a bucket (or not compiled yet)."""


def conv_layers(config) -> list[tuple[int, int]]:
    """(kernel, stride) of each feature-encoder convolution, checked."""
    kernels, strides = getattr(config, "conv_kernel", None), getattr(config, "conv_stride", None)
    if not isinstance(kernels, (list, tuple)) or not isinstance(strides, (list, tuple)) \
            or not 1 <= len(kernels) == len(strides) <= MAX_CONV_LAYERS \
            or any(not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 4096 for v in (*kernels, *strides)):
        raise UnsupportedAudioModel(f"config conv_kernel={str(kernels)[:80]} / conv_stride={str(strides)[:80]} must "
                                    f"be lists of 1 to {MAX_CONV_LAYERS} equal lengths of integers in [1, 4096]")
    return list(zip(kernels, strides))


def frames(samples: int | torch.Tensor, layers: list[tuple[int, int]]) -> int | torch.Tensor:
    """Frames the feature encoder makes of ``samples`` (``floor((n - kernel) / stride) + 1`` per convolution)."""
    for kernel, stride in layers:
        samples = (samples - kernel) // stride + 1
    return samples


def receptive_field(layers: list[tuple[int, int]]) -> int:
    """The fewest samples that make one frame."""
    samples = 1
    for kernel, stride in reversed(layers):
        samples = (samples - 1) * stride + kernel
    return samples


def check_ctc_model(config) -> None:
    """Refuses the configurations whose bucketed outputs would differ from an unpadded run (or not compiled)."""
    if getattr(config, "feat_extract_norm", "group") != "layer":
        raise UnsupportedAudioModel(
            f"feat_extract_norm={getattr(config, 'feat_extract_norm', None)!r}: the group-norm feature encoder "
            "normalises each channel over the whole input, padding included, so a call padded to a max_samples "
            "bucket would not give the logits of the unpadded audio; optimum-npu compiles Wav2Vec2 models with "
            "feat_extract_norm='layer' (e.g. facebook/wav2vec2-large-960h-lv60-self)")
    if getattr(config, "add_adapter", False):
        raise UnsupportedAudioModel("add_adapter=True (a Wav2Vec2 adapter after the encoder) is not compiled yet; "
                                    "use a model without an adapter")
    conv_layers(config)


class StaticCTC(nn.Module):
    """``Wav2Vec2ForCTC`` returning its logits, with the frame mask and attention bias as inputs."""

    def __init__(self, hf_model: PreTrainedModel):
        super().__init__()
        self.model = hf_model
        self.outputs = ("logits",)

    def forward(self, input_values: torch.Tensor, frame_mask: torch.Tensor,
                frame_bias: torch.Tensor) -> tuple[torch.Tensor]:
        base = self.model.wav2vec2
        encoder = base.encoder
        features = base.feature_extractor(input_values).transpose(1, 2)                  # [B, F, C]
        hidden, _ = base.feature_projection(features)                                    # [B, F, H]
        hidden = hidden * frame_mask                                                     # padded frames are 0
        hidden = hidden + encoder.pos_conv_embed(hidden)
        stable = type(encoder).__name__.endswith("StableLayerNorm")   # layer norm after the layers, not before
        if not stable:
            hidden = encoder.layer_norm(hidden)
        for layer in encoder.layers:
            hidden = layer(hidden, attention_mask=frame_bias)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        if stable:
            hidden = encoder.layer_norm(hidden)
        return (self.model.lm_head(hidden),)                                             # [B, F, V]

    def present(self, example: tuple[torch.Tensor, ...], wanted: tuple[str, ...]) -> tuple[str, ...]:
        return self.outputs
