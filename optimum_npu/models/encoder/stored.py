"""Reading an encoder artifact's ``npu_config.json`` (untrusted data) into validated facts before anything is loaded."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimum_npu.compile.artifact import read_graph
from optimum_npu.device.buckets import BUCKET_KEYS, Bucket
from optimum_npu.device.spec import NPUSpec
from optimum_npu.models.decoder.artifact_files import check_stored_architecture, read_hf_config, stored_spec
from optimum_npu.models.decoder.npu_config import NPUConfigError
from optimum_npu.models.decoder.stored_config import short_repr, stored_knob_error
from optimum_npu.models.encoder.modalities import FEEDS
from optimum_npu.models.encoder.npu_config import AXES, RUNTIME_OPTIONS, NPUEncoderConfig
from optimum_npu.models.encoder.tasks import TASKS, EncoderTask, task_of_architecture
from optimum_npu.models.knobs import refuse_changed_knobs
from optimum_npu.schema import NPU_CONFIG_FILE, Graph
from optimum_npu.untrusted import expect_dict

#: The length knob of each modality (a vision artifact has no ``seq_lens``, a text one no ``image_sizes``).
MODALITY_AXES = {"text": "seq_lens", "image": "image_sizes", "audio": "max_samples"}


@dataclass(frozen=True)
class StoredEncoder:
    """What a verified encoder artifact holds, every field checked."""

    architecture: str
    task: EncoderTask
    outputs: tuple[str, ...]
    inputs: tuple[str, ...]
    config: NPUEncoderConfig
    spec: NPUSpec
    hf_config: Any
    graphs: dict[str, Graph]
    buckets: list[Bucket]


def read_stored(root: Path, stored: Any, requested: Any) -> StoredEncoder:
    """Checks every stored knob like user input, then against config.json and the graphs; ``requested``: the
    caller's ``npu_config`` at load time (runtime options only; a differing compile knob is refused)."""
    origin = str(Path(root) / NPU_CONFIG_FILE)
    stored = expect_dict(stored, origin, NPUConfigError)
    hf_config = read_hf_config(root)
    arch = check_stored_architecture(stored, hf_config, "encoder", origin)
    task = TASKS.get(stored.get("task")) if isinstance(stored.get("task"), str) else None
    if task is None or task is not task_of_architecture(arch.name):
        raise stored_knob_error(origin, f"task={short_repr(stored.get('task'))} must be "
                                        f"{task_of_architecture(arch.name).name!r} for {arch.name}")
    outputs = stored.get("outputs")
    if not isinstance(outputs, list) or not outputs or any(o not in task.outputs for o in outputs) \
            or list(outputs) != [o for o in task.outputs if o in outputs]:
        raise stored_knob_error(origin, f"outputs={short_repr(outputs)} must be a non-empty ordered subset of "
                                        f"{list(task.outputs)}")
    input_lists = FEEDS[task.modality].input_lists
    inputs = tuple(stored.get("inputs")) if isinstance(stored.get("inputs"), list) else None
    if inputs not in input_lists:
        raise stored_knob_error(origin, f"inputs={short_repr(stored.get('inputs'))} must be one of "
                                        f"{[list(i) for i in input_lists]}")
    knobs = {key: stored.get(key) for key in [*NPUEncoderConfig().to_dict(), *AXES]}
    try:
        config = NPUEncoderConfig.coerce(knobs)
    except (NPUConfigError, TypeError) as err:
        raise stored_knob_error(origin, short_repr(str(err), 300)) from None
    config = dataclasses.replace(config, **runtime_options(knobs, requested))   # the caller's options, checked
    if config.axis != MODALITY_AXES[task.modality]:
        raise stored_knob_error(origin, f"{MODALITY_AXES[task.modality]} must be set for a {task.modality} "
                                        f"encoder (and {sorted(set(AXES) - {MODALITY_AXES[task.modality]})} not)")
    if stored.get("graphs") != config.graph_names():
        raise stored_knob_error(origin, f"graphs={short_repr(stored.get('graphs'))} must be {config.graph_names()}")
    graphs = {name: read_graph(root, name) for name in config.graph_names()}
    for bucket in config.buckets():
        graph = graphs[bucket.name]
        described = {key: graph.attributes.get(key) for key in BUCKET_KEYS}
        if described != bucket.attributes() or tuple(s.name for s in graph.inputs if s.kind == "input") != inputs \
                or len(graph.outputs) != len(outputs):
            raise stored_knob_error(origin, f"graph {bucket.name!r} does not match the stored bucket, inputs "
                                            "and outputs")
    return StoredEncoder(arch.name, task, tuple(outputs), inputs, config, stored_spec(stored, origin), hf_config,
                         graphs, config.buckets())


def runtime_options(knobs: dict[str, Any], requested: Any, config_class: type = NPUEncoderConfig) -> dict[str, Any]:
    """The runtime options of ``requested`` (a dict or a ``config_class``); a compile knob that differs from the
    stored one (``knobs``) is an error."""
    if requested is None:
        return {}
    if isinstance(requested, config_class):
        requested = {**requested.to_dict(), **requested.runtime()}
    if not isinstance(requested, dict):
        raise NPUConfigError(f"npu_config={short_repr(requested)} at load time must be a dict of runtime options "
                             f"{list(RUNTIME_OPTIONS)}")
    changed = sorted(k for k, v in requested.items() if k not in RUNTIME_OPTIONS and v != knobs.get(k)
                     and not (isinstance(v, (list, tuple)) and list(v) == knobs.get(k)))
    refuse_changed_knobs("npu_config", changed, str(list(RUNTIME_OPTIONS)))
    return {key: value for key, value in requested.items() if key in RUNTIME_OPTIONS}
