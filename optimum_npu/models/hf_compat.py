"""Transformers habits the NPU classes honour: ``dtype="auto"``, ``num_parameters()``, the pipelines' model check.

The compiled artifact fixes the compute dtype, so ``dtype`` / ``torch_dtype`` passed to
``from_pretrained`` either chooses it at export or must agree with it at load ("auto" always
agrees). The parameter count is the HF model's own, from a weightless (``meta``) instance of
its config. Pipelines accept a model whose class name is listed in the task's model mapping:
``register_for_pipeline`` lists the NPU class there under a key no Transformers config uses.
"""

from __future__ import annotations

from typing import Any

import torch

#: Compute dtypes a compiled model can have (names as in ``npu_config``).
DTYPE_NAMES = ("float32", "float16", "bfloat16")
#: The model-mapping key the NPU classes are listed under (no Transformers config has this model type).
PIPELINE_KEY = "optimum-npu"


def requested_dtype(kwargs: dict[str, Any]) -> str | None:
    """Pops ``dtype`` / ``torch_dtype`` from ``from_pretrained`` kwargs; the dtype name asked for (None: "auto")."""
    values = {name: kwargs.pop(name) for name in ("dtype", "torch_dtype") if name in kwargs}
    if len(values) == 2 and values["dtype"] != values["torch_dtype"]:
        raise ValueError(f"dtype={values['dtype']!r} and torch_dtype={values['torch_dtype']!r} disagree; pass one "
                         "(torch_dtype is the older name of dtype)")
    value = next(iter(values.values()), None)
    if value is None or value == "auto":
        return None
    name = str(value).removeprefix("torch.") if isinstance(value, (torch.dtype, str)) else None
    if name not in DTYPE_NAMES:
        raise ValueError(f"dtype={value!r} is not supported; use 'auto' (the checkpoint's or the artifact's dtype) "
                         f"or one of {list(DTYPE_NAMES)} (torch dtypes are accepted)")
    return name


def count_parameters(auto_class: Any, config: Any, *, only_trainable: bool = False,
                     exclude_embeddings: bool = False) -> int:
    """The parameter count of the HF model ``auto_class`` builds from ``config`` (built on ``meta``: no memory)."""
    with torch.device("meta"):
        reference = auto_class.from_config(config)
    return reference.num_parameters(only_trainable=only_trainable, exclude_embeddings=exclude_embeddings)


def register_for_pipeline(model_class: type, mapping_names: dict[str, Any]) -> None:
    """Lists ``model_class`` in a Transformers task mapping, so its pipeline accepts the class without an error."""
    mapping_names.setdefault(f"{PIPELINE_KEY}-{model_class.__name__}", model_class.__name__)
