"""What a model family is to the rest of the library: one ``Family`` entry per family.

A family (``decoder``, ``vlm``, later encoders, seq2seq, Diffusers...) is a folder under
``models/`` holding its adapters, wrapper, graph builder and HF class, plus one ``Family``
entry (its ``family.py``) listed in ``models/families.py``. Everything outside the folder
that must differ per family (the auto classes, the compile-cache key, the command line, the
planner) reads it from the entry, and the model card's section and figures are hooks of the
family's class (``card_section``, ``card_figures``); nothing else switches on a family's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


def graph_summary(graphs: list[str]) -> str:
    """``"3 graphs (prefill, decoder_batch_1, decoder_batch_4)"``."""
    return f"{len(graphs)} graphs ({', '.join(graphs)})"


@dataclass(frozen=True)
class Family:
    """One model family.

    Attributes:
        name: the name artifacts store as ``family`` in ``npu_config.json``.
        model_class: the HF-facing NPU class (``from_pretrained``, ``save_pretrained``, ``push_to_hub``).
        config_class: its compile configuration (``npu_config=`` as an object).
        graph_builder: compiles an HF model into an artifact folder (what the class's export runs).
        cache_key: the compile-cache key of (HF model, architecture, config, shipped-files folder).
        export_config: ``(flat CLI knobs, family CLI options) -> npu_config`` for ``optimum-npu export``.
        placement: ``(device id, profile, prefix_caching) -> runtime npu_config`` that runs a loaded artifact on
            that device (with the profiler and prefix caching on when asked).
        plan_config: the HF config the capacity planner sizes for a checkpoint of this family (raises
            a ValueError saying why when it cannot).
        summary: a one-line description of a loaded model's graphs for the command line.
        recognizes: whether a checkpoint folder without a Transformers ``config.json`` is this family's
            (a Diffusers pipeline's ``model_index.json``); None: found by its config's architecture.
    """

    name: str
    model_class: type
    config_class: type
    graph_builder: Callable[..., Any]
    cache_key: Callable[..., Any]
    export_config: Callable[[dict[str, Any], dict[str, Any]], Any]
    placement: Callable[..., dict[str, Any]]
    plan_config: Callable[[Any], Any]
    summary: Callable[[Any], str] = field(default=lambda model: graph_summary(model.npu_graphs))
    recognizes: Callable[[Any], bool] | None = None
