"""Tensor parallelism for text encoders: which weights of BERT, RoBERTa, XLM-R and DistilBERT are split.

Each layer's query/key/value and first feed-forward projection keep 1/N of their output features (1/N of the
attention heads and of the intermediate columns per device); the attention output and the second feed-forward
projection keep 1/N of their input features and are followed by an all-reduce (``compile/tensor_parallel.py``).
Embeddings, layer norms, the pooler and the task heads are replicated; there is no vocabulary split (the plan
names no logits weight). HF's Transformers views the heads with ``-1``, so the graphs need no change.
"""

from __future__ import annotations

from optimum_npu.compile.tensor_parallel_plan import TensorParallelPlan, WeightSplit
from optimum_npu.models.decoder.npu_config import NPUConfigError

_BERT_LAYER = r"^(\w+\.)?encoder\.layer\.\d+\."
_DISTILBERT_LAYER = r"^(distilbert\.)?transformer\.layer\.\d+\."
#: Module name patterns (regular expressions over checkpoint names, any task's prefix) and split, per model type.
_PLANS = {
    "bert": {_BERT_LAYER + r"attention\.self\.(query|key|value)$": "colwise",
             _BERT_LAYER + r"attention\.output\.dense$": "rowwise",
             _BERT_LAYER + r"intermediate\.dense$": "colwise", _BERT_LAYER + r"output\.dense$": "rowwise"},
    "distilbert": {_DISTILBERT_LAYER + r"attention\.(q_lin|k_lin|v_lin)$": "colwise",
                   _DISTILBERT_LAYER + r"attention\.out_lin$": "rowwise",
                   _DISTILBERT_LAYER + r"ffn\.lin1$": "colwise", _DISTILBERT_LAYER + r"ffn\.lin2$": "rowwise"},
}
_LAYOUT = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "distilbert": "distilbert"}


def encoder_tp_plan(model_type: str, size: int) -> TensorParallelPlan | None:
    """The plan splitting a text encoder over ``size`` devices (None for one device)."""
    if size == 1:
        return None
    if model_type not in _LAYOUT:
        raise NPUConfigError(f"tensor_parallel_size={size}: tensor parallelism is compiled for BERT, RoBERTa, "
                             f"XLM-R and DistilBERT encoders, not model_type={model_type!r}; use "
                             "tensor_parallel_size=1 (and more replicas with device=<id>)")
    rules = tuple((pattern, WeightSplit(style)) for pattern, style in _PLANS[_LAYOUT[model_type]].items())
    return TensorParallelPlan(size, rules, logits=())
