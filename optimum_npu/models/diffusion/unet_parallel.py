"""Tensor parallelism of a UNet (SD 1.x/2.x, SDXL): which weights split how, one all-reduce per block.

Megatron-style, so each ResNet block and each attention / feed-forward costs one all-reduce:

- ResNet block (``ResnetBlock2D``): ``norm1`` + SiLU run on the whole (replicated) input; ``conv1`` keeps 1/N
  of its output channels and ``time_emb_proj`` 1/N of its output features (the time embedding is added to
  the rank's channels; with ``scale_shift`` its scale and shift halves are split per part); ``norm2`` is a
  group norm over the rank's channels in groups/N groups; ``conv2`` keeps 1/N of its input channels and is
  followed by an all-reduce, its bias held by rank 0 so the sum adds it once. The shortcut is replicated.
- Transformer block (``BasicTransformerBlock``): the attentions' ``to_q``/``to_k``/``to_v`` keep 1/N of the
  heads, ``to_out.0`` reads them and is followed by an all-reduce; the feed-forward's input projection keeps
  1/N of its columns (a gated GEGLU / SwiGLU projection [value; gate] per part) and its output projection
  reads them, followed by an all-reduce.
- Everything else is replicated: ``conv_in``, ``conv_out``, the time and added (SDXL) embeddings, down- and
  upsamplers, the transformer models' ``norm``/``proj_in``/``proj_out``, layer norms, shortcut convolutions.

The rules are found by walking the module (block classes, not names), one rule per pattern where the layer
indices are wildcards. ``check_unet_split`` refuses, before anything is captured, a size that does not divide
every split group norm's groups and every split attention's heads.
"""

from __future__ import annotations

import re
from math import gcd

from diffusers.models.activations import GEGLU, SwiGLU
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.resnet import ResnetBlock2D
from torch import nn

from optimum_npu.compile.tensor_parallel_plan import TensorParallelError, TensorParallelPlan, WeightSplit, module_regex
from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.models.diffusion.head_split import HeadSplitAttention, swapped_attention

COLUMN, ROW = WeightSplit("colwise"), WeightSplit("rowwise")
#: The largest size the refusal lists as an alternative.
LARGEST_LISTED = 64


def _wildcard(name: str) -> str:
    """``down_blocks.1.attentions.0.transformer_blocks.1.ff`` -> ``down_blocks.1.attentions.*.transformer_blocks.*.ff``
    (blocks of one down / up level share their sizes, so one rule covers them)."""
    return re.sub(r"\.(resnets|attentions|transformer_blocks)\.\d+", r".\1.*", name)


def _resnet_rules(name: str, resnet: ResnetBlock2D) -> dict[str, WeightSplit]:
    channels = resnet.conv1.out_channels
    time = WeightSplit("colwise", parts=(channels, channels)) if resnet.time_embedding_norm == "scale_shift" \
        else COLUMN
    return {f"{name}.conv1": COLUMN, f"{name}.time_emb_proj": time, f"{name}.norm2": COLUMN, f"{name}.conv2": ROW}


def _transformer_block_rules(name: str, block: BasicTransformerBlock) -> dict[str, WeightSplit]:
    rules = {}
    for attn in ("attn1", "attn2"):
        if getattr(block, attn, None) is not None:
            rules.update({f"{name}.{attn}.to_{p}": COLUMN for p in "qkv"} | {f"{name}.{attn}.to_out.0": ROW})
    if block.ff is not None:
        act, layers = block.ff.net[0], list(block.ff.net)
        out = next(i for i in range(len(layers) - 1, 0, -1) if isinstance(layers[i], nn.Linear))
        half = act.proj.out_features // 2
        rules[f"{name}.ff.net.0.proj"] = WeightSplit("colwise", parts=(half, half)) \
            if isinstance(act, (GEGLU, SwiGLU)) else COLUMN
        rules[f"{name}.ff.net.{out}"] = ROW
    return rules


def _split_modules(unet) -> dict[str, WeightSplit]:
    """Every split module of ``unet`` by its (wildcarded) name."""
    rules: dict[str, WeightSplit] = {}
    for name, module in unet.named_modules():
        if type(module) is ResnetBlock2D:
            found = _resnet_rules(_wildcard(name), module)
        elif isinstance(module, BasicTransformerBlock):
            found = _transformer_block_rules(_wildcard(name), module)
        else:
            continue
        for pattern, split in found.items():
            if rules.setdefault(pattern, split) != split:
                raise TensorParallelError(f"the UNet's modules {pattern} differ in size within one level ({split} vs "
                                          f"{rules[pattern]}); this UNet cannot be split (use tensor_parallel_size=1)")
    return rules


def check_unet_split(unet, size: int) -> None:
    """Refuses ``size`` unless it divides the groups of every split group norm and the heads of every attention."""
    if size == 1:
        return
    groups = {m.norm2.num_groups for m in unet.modules() if type(m) is ResnetBlock2D}
    heads = {m.heads for block in unet.modules() if isinstance(block, BasicTransformerBlock)
             for m in (block.attn1, block.attn2) if m is not None}
    common = gcd(*groups, *heads)
    if common % size:
        allowed = [d for d in range(1, min(common, LARGEST_LISTED) + 1) if common % d == 0]
        raise NPUConfigError(
            f"tensor_parallel_size={size} does not divide the UNet: each device normalises its share of every "
            f"ResNet's channels in whole groups (norm_num_groups: {sorted(groups)}) and attends with whole heads "
            f"(attention heads: {sorted(heads)}); choose a tensor_parallel_size among {allowed}")


def unet_tensor_parallel_plan(unet, size: int) -> TensorParallelPlan:
    """The split of ``unet`` over ``size`` devices (module docstring); checked by ``check_unet_split``."""
    check_unet_split(unet, size)
    rules = tuple((module_regex(name), split) for name, split in _split_modules(unet).items())
    return TensorParallelPlan(size, rules, logits=())


def head_split_unet_attention(unet):
    """``unet`` with ``HeadSplitAttention`` in its transformer blocks' attentions while captured; restored after."""
    return swapped_attention(unet, HeadSplitAttention(), where=lambda name: ".transformer_blocks." in name)
