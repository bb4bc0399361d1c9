"""Tensor parallelism for encoder-decoder models: which weights of T5, BART, Pegasus and Whisper are split.

In the encoder and the decoder, every attention (self and cross) keeps 1/N of its heads per device: q/k/v keep
1/N of their output features, the output projection 1/N of its input features and is followed by an all-reduce;
the feed-forward's first projection(s) (T5 ``wi`` / ``wi_0`` / ``wi_1``, ``fc1``) are split by columns, the
second (``wo``, ``fc2``) by rows with an all-reduce. T5's relative-attention bias table [buckets, heads] keeps
its rank's heads. The decoder graphs' logits projection is split by vocabulary and gathered; the embedding table
it is tied to stays whole (shared by the encoder and decoder embeddings, stored once). The paged self-attention
pool and the per-slot cross-attention keys/values hold the rank's heads; the slots' encoder mask is replicated.
The compile pass is ``compile/tensor_parallel.py``; HF's modules view heads with ``-1``, so nothing else changes.
"""

from __future__ import annotations

from optimum_npu.compile.tensor_parallel_plan import TensorParallelPlan, WeightSplit
from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.models.seq2seq.architectures import Seq2SeqModelConfig
from optimum_npu.models.seq2seq.npu_config import ENCODER_KIND

_T5 = r"^(encoder|decoder)\.block\.\d+\.layer\.\d+\."
_BART = r"^(model\.)?(encoder|decoder)\.layers\.\d+\."
#: (module regular expression, split) per layer recipe: attention heads, then the feed-forward.
_RULES = {
    "t5": ((_T5 + r"(SelfAttention|EncDecAttention)\.(q|k|v)$", WeightSplit("colwise")),
           (_T5 + r"(SelfAttention|EncDecAttention)\.o$", WeightSplit("rowwise")),
           (_T5 + r"SelfAttention\.relative_attention_bias$", WeightSplit("colwise", out_dim=1)),  # [buckets, H]
           (_T5 + r"DenseReluDense\.(wi|wi_0|wi_1)$", WeightSplit("colwise")),
           (_T5 + r"DenseReluDense\.wo$", WeightSplit("rowwise"))),
    "bart": ((_BART + r"(self_attn|encoder_attn)\.(q_proj|k_proj|v_proj)$", WeightSplit("colwise")),
             (_BART + r"(self_attn|encoder_attn)\.out_proj$", WeightSplit("rowwise")),
             (_BART + r"fc1$", WeightSplit("colwise")),
             (_BART + r"fc2$", WeightSplit("rowwise"))),
}
#: Device state without a head dimension: the encoder mask of each cross-attention slot.
REPLICATED_STATES = ("cross_mask",)


def seq2seq_tp_plan(model: Seq2SeqModelConfig, size: int) -> TensorParallelPlan | None:
    """The plan splitting ``model`` over ``size`` devices (None for one device)."""
    if size == 1:
        return None
    check_heads_divide(model, size)
    layout = model.layout
    rules = _RULES["t5" if layout.kind == "t5" else "bart"]
    return TensorParallelPlan(size, rules, logits=(f"{layout.lm_head}.weight",), logits_free_kinds=(ENCODER_KIND,),
                              replicated_states=REPLICATED_STATES)


def check_heads_divide(model: Seq2SeqModelConfig, size: int) -> None:
    """Refuses a ``tensor_parallel_size`` that does not divide the attention heads (before anything is captured)."""
    heads = {"decoder": model.heads, "encoder": model.encoder_heads or model.heads}
    for where, count in heads.items():
        if count % size:
            divisors = [d for d in range(1, count + 1) if count % d == 0]
            raise NPUConfigError(f"tensor_parallel_size={size} does not divide the {count} attention heads of the "
                                 f"{model.architecture} {where}; choose tensor_parallel_size among {divisors}")
