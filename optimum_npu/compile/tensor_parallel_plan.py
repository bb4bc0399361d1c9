"""How a model's weights are split over a tensor-parallel group: the plan the compiler pass reads.

A ``TensorParallelPlan`` lists, per module-name pattern, a ``WeightSplit``: column-wise (output
features), row-wise (input features) or replicated, with the layout details of fused projections,
GPT-2's ``Conv1D`` and stacked experts. Architectures declare theirs (``models/*/tp_plan.py``,
adapters); ``compile/tensor_parallel.py`` applies it to graphs and weights.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from optimum_npu.compile.quantize import is_quantized_source

#: The split styles a plan may hold; anything else is refused.
STYLES = ("colwise", "rowwise", "replicate")


class TensorParallelError(ValueError):
    """A graph cannot be split over the requested number of devices."""


@dataclass(frozen=True)
class WeightSplit:
    """How one module's weight (and bias) is split.

    Attributes:
        style: ``colwise`` (output features), ``rowwise`` (input features) or ``replicate``.
        out_dim: the weight dimension holding output features: 0 for ``nn.Linear`` [out, in],
            1 for GPT-2 ``Conv1D`` [in, out].
        parts: for a fused colwise projection, the full extent of each part along the output
            features (q, k, v or gate, up); each part is split in N and every rank keeps its
            slice of each part. Empty: one part.
        in_dim: the weight dimension holding input features, for a rowwise split of a tensor of more than
            two dimensions (stacked experts); None: the other one of a 2-D weight.

    Besides ``STYLES``, compiler-built plans use ``rowwise_bias``: a bias added after a row-parallel product
    (stacked experts' down bias [E, H]), kept whole on rank 0 and zero elsewhere, so the all-reduce adds it once.
    """

    style: str
    out_dim: int = 0
    parts: tuple[int, ...] = ()
    in_dim: int | None = None


@dataclass(frozen=True)
class TensorParallelPlan:
    """How to split a model's weights over ``size`` devices.

    Attributes:
        size: devices in the tensor-parallel group.
        rules: (regular expression over module names, split); the first match wins.
        logits: names of the weight the logits projection reads (``lm_head.weight``; with tied
            embeddings the table may carry the embedding's name).
        expert_parallel: the experts are spread over the group (``expert_parallel_size`` = ``size``); the
            rules then cut the stacked expert weights along their first (expert) dimension.
        logits_free_kinds: bucket kinds (``Graph.attributes["kind"]``) whose graphs have no logits projection
            (an encoder-decoder's encoder graphs); every other graph must have exactly one.
        replicated_states: device state inputs (``kv_cache`` kind) without a head dimension, kept whole on every
            rank (an encoder-decoder's per-slot encoder mask); the others are split by heads (dimension 1).
    """

    size: int
    rules: tuple[tuple[str, WeightSplit], ...] = ()
    logits: tuple[str, ...] = ("lm_head.weight",)
    expert_parallel: bool = False
    logits_free_kinds: tuple[str, ...] = ()
    replicated_states: tuple[str, ...] = ()

    @classmethod
    def from_hf(cls, size: int, hf_plan: dict[str, str], prefix: str = "model.",
                logits: tuple[str, ...] = ("lm_head.weight",)) -> "TensorParallelPlan":
        """From an HF-style plan such as ``{"layers.*.self_attn.q_proj": "colwise"}`` (plain splits only).

        A style outside ``STYLES`` (e.g. HF's ``colwise_gather_output`` on a fused projection) is
        refused: its parts must be declared in the architecture's adapter.
        """
        rules = []
        for pattern, style in hf_plan.items():
            if style not in STYLES:
                raise TensorParallelError(
                    f"module {prefix}{pattern} has tensor-parallel style {style!r}, which optimum-npu does not "
                    f"split; known styles: {', '.join(STYLES)} (a fused projection is declared per part in the "
                    "architecture's adapter, models/adapters)")
            rules.append((module_regex(prefix + pattern), WeightSplit(style)))
        return cls(size, tuple(rules), logits)

    def split_of(self, weight_name: str) -> WeightSplit | None:
        """The split of the module owning ``weight_name`` (``...q_proj.weight`` -> ``...q_proj``), or of the
        parameter itself when a rule names it (stacked experts: ``...experts.down_proj``, whose quantized
        ``.qweight`` / ``.weight_scale`` take its split), or None."""
        names = [weight_name]
        if is_quantized_source(weight_name):  # stacked experts' values / scales: the split of the weight they replace
            names.append(weight_name.rsplit(".", 1)[0])
        for name in names:
            module = name.rsplit(".", 1)[0]
            split = next((split for pattern, split in self.rules
                          if re.match(pattern, module) or re.match(pattern, name)), None)
            if split is not None:
                return split
        return None

    def style_of(self, weight_name: str) -> str | None:
        split = self.split_of(weight_name)
        return split.style if split else None


def module_regex(pattern: str) -> str:
    """``layers.*.mlp.fc1`` -> a regular expression where ``*`` is a layer index."""
    return "^" + re.escape(pattern).replace(r"\*", r"\d+") + "$"
