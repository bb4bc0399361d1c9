"""Run a compiled visual encoder on a simulated device: bucket per image, pad, run, de-pad.

The encoder runs on one device (``tensor_parallel_size`` 1): the first of the allowed ids.
Its weights and workspace are reserved there, next to whatever else the device holds.
Simulated time per call comes from the graph's ``GraphCostModel`` (no attention kernels:
the segment-masked attention is static aten matmuls, costed like any op) plus the host link
copies of the patches in and the merged tokens out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from optimum_npu.compile.artifact import ArtifactError, read_graph
from optimum_npu.compile.weights import load_weights, stored_weight_bytes
from optimum_npu.device.buckets import BUCKET_KEYS, buckets_of_kind
from optimum_npu.device.device import DeviceRegistry, NPUDevice
from optimum_npu.device.engine import DeviceEngine
from optimum_npu.device.profiler import Profiler
from optimum_npu.device.spec import NPUSpec
from optimum_npu.models.vlm.visual_config import NPUVisualConfig, VisualModelConfig, visual_bucket
from optimum_npu.models.vlm.visual_export import VISUAL_CONFIG_FILE
from optimum_npu.models.vlm.visual_inputs import prepare_image, unpad_output
from optimum_npu.schema import WEIGHTS_FILE
from optimum_npu.untrusted import expect_dict, load_json

#: What every refusal of a stored visual file ends with.
_FIX = "the artifact was modified or was not written by this optimum-npu: re-download it or recompile the model"


class VisualInputError(ValueError):
    """Images the compiled visual encoder cannot take (refused before any compute)."""


@dataclass(frozen=True)
class ImageStats:
    """One image's run: its patches, the bucket it ran on, and its simulated seconds."""

    grid_thw: tuple[int, int, int]
    patches: int
    bucket: int
    seconds: float

    @property
    def padded_patches(self) -> int:
        return self.bucket - self.patches


@dataclass
class VisualStats:
    """Per-image stats of one ``encode`` call and their totals."""

    images: list[ImageStats] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(image.seconds for image in self.images)

    @property
    def padding_waste(self) -> float:
        """Padded patches / bucket patches computed (0 when every image fills its bucket)."""
        total = sum(image.bucket for image in self.images)
        return sum(image.padded_patches for image in self.images) / total if total else 0.0


@dataclass
class VisualFeatures:
    """What the encoder gives the language model for a batch of images.

    ``embeds`` [tokens, out_hidden] replace the image tokens' embeddings; ``deepstack``
    [L, tokens, out_hidden] (Qwen3-VL, else None) are added to the hidden states at the image
    tokens after decoder layer ``l`` < L; ``stats`` as ``encode``'s.
    """

    embeds: torch.Tensor
    deepstack: torch.Tensor | None
    stats: VisualStats


class VisualRuntime:
    """A compiled visual encoder loaded onto a simulated device.

    Args:
        root_dir: the submodule directory ``compile_visual`` wrote (already verified by the parent).
        visual_config: the knobs the caller expects; they must equal the compiled ones.
        spec: the NPU spec.
        device_ids: device ids the encoder may use; it runs on the first.
        owner: label for memory reports.
        registry: the device registry (``DEFAULT_REGISTRY`` when None).
        profiler: records every bucket call on the device's track when given.
    """

    def __init__(self, root_dir: str | Path, visual_config: NPUVisualConfig | dict | int | list, spec: NPUSpec,
                 device_ids: list[int], owner: str = "visual encoder", registry: DeviceRegistry | None = None,
                 profiler: Profiler | None = None):
        root = Path(root_dir)
        self.config = NPUVisualConfig.coerce(visual_config)
        origin = str(root / VISUAL_CONFIG_FILE)
        document = expect_dict(load_json(root / VISUAL_CONFIG_FILE, what=origin, error=ArtifactError), origin,
                               ArtifactError)
        compiled = {key: document.get(key) for key in self.config.to_dict()}
        if compiled != self.config.to_dict():
            raise ArtifactError(f"{root}: the visual encoder was compiled with {str(compiled)[:300]} but "
                                f"{self.config.to_dict()} was requested; compile knobs cannot change at load time: "
                                "recompile the model")
        graph_list = document.get("graphs")
        if graph_list is not None and graph_list != self.config.graph_names():
            raise ArtifactError(f"{origin}: graphs={str(graph_list)[:300]} must be {self.config.graph_names()}, one "
                                f"per bucket of max_seq_len={list(self.config.max_seq_len)}; {_FIX}")
        self.model = _stored_model(document.get("model"), origin)
        self.dtype = getattr(torch, self.config.dtype)
        graphs = {name: read_graph(root, name) for name in self.config.graph_names()}
        for patches, name in zip(self.config.max_seq_len, self.config.graph_names()):
            described = {key: graphs[name].attributes.get(key) for key in BUCKET_KEYS}
            if described != visual_bucket(patches).attributes():
                raise ArtifactError(f"{origin}: graph {name!r} describes the bucket {str(described)[:200]} but "
                                    f"max_seq_len implies {visual_bucket(patches).attributes()}; {_FIX}")
        #: patches of each bucket -> its graph, from the graphs' attributes
        self._graph_for = {b.tokens: b.name for b in buckets_of_kind(graphs, "visual")}
        self.spec = spec
        self.engine = DeviceEngine(   # weights sized from the safetensors header before anything is loaded
            graphs, spec, list(device_ids)[:1], self.config.dtype, owner=owner, registry=registry, profiler=profiler,
            weights=lambda rank: load_weights(root / WEIGHTS_FILE),
            weight_bytes=lambda rank: stored_weight_bytes(root / WEIGHTS_FILE), error=ArtifactError)
        self.device: NPUDevice = self.engine.devices[0]
        self.memory = self.engine.memory
        self.costs = self.engine.costs

    def release(self) -> None:
        """Frees the encoder's memory on its device."""
        self.engine.release()

    def check(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> list[int]:
        """Validates a batch before any compute; returns the bucket of each image."""
        model, buckets = self.model, self.config.max_seq_len
        grids = [tuple(int(v) for v in row) for row in torch.as_tensor(image_grid_thw).reshape(-1, 3).tolist()]
        if pixel_values.dim() != 2 or pixel_values.shape[1] != model.patch_dim:
            raise VisualInputError(f"pixel_values has shape {list(pixel_values.shape)}; expected [patches, "
                                   f"{model.patch_dim}] as the model's image processor emits")
        total = sum(t * h * w for t, h, w in grids)
        if total != pixel_values.shape[0]:
            raise VisualInputError(f"image_grid_thw {grids} adds up to {total} patches but pixel_values has "
                                   f"{pixel_values.shape[0]} rows; pass the processor's outputs together")
        chosen = []
        for index, (t, h, w) in enumerate(grids):
            m = model.spatial_merge_size
            if h % m or w % m:
                raise VisualInputError(f"image {index} has grid {t}x{h}x{w}: h and w must be multiples of "
                                       f"spatial_merge_size={m}; use the model's image processor")
            bucket = self.config.bucket_for(t * h * w)
            if bucket is None:
                raise VisualInputError(
                    f"image {index} (grid {t}x{h}x{w}) needs {t * h * w} vision patches but the largest compiled "
                    f"visual bucket (visual.max_seq_len) is {buckets[-1]}: add a bucket >= {t * h * w} (e.g. "
                    f"{-(-t * h * w // model.merge_unit) * model.merge_unit}) to visual.max_seq_len and recompile, "
                    "or resize the image (the processor's max_pixels)")
            chosen.append(bucket)
        return chosen

    def encode(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> tuple[torch.Tensor, VisualStats]:
        """The merged tokens of every image and the stats (``encode_features`` also gives DeepStack features)."""
        features = self.encode_features(pixel_values, image_grid_thw)
        return features.embeds, features.stats

    def encode_features(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> VisualFeatures:
        """Encodes a batch of images (or videos), each on the smallest bucket that holds it.

        Args:
            pixel_values: [total_patches, patch_dim], the processor's rows of every image in order.
            image_grid_thw: [num_images, 3] (t, h, w) in patches.
        Returns:
            ``VisualFeatures``: the merged tokens of all images in order, [total_patches / merge_unit,
            out_hidden], the DeepStack features [L, total_patches / merge_unit, out_hidden] (Qwen3-VL)
            and the per-image stats (bucket, padding, simulated seconds).
        """
        buckets = self.check(pixel_values, image_grid_thw)
        grids = [tuple(int(v) for v in row) for row in torch.as_tensor(image_grid_thw).reshape(-1, 3).tolist()]
        outputs, deepstack, stats, start = [], [], VisualStats(), 0
        for grid, bucket in zip(grids, buckets):
            patches = grid[0] * grid[1] * grid[2]
            image = prepare_image(pixel_values[start:start + patches], grid, bucket, self.model, self.dtype)
            start += patches
            result, call = self.engine.run(self._graph_for[bucket], image.graph_inputs(), "visual")
            merged, stacked = result if isinstance(result, tuple) else (result, None)   # stacked [L, T, O]
            outputs.append(unpad_output(merged, image, self.model.merge_unit))
            if stacked is not None:
                deepstack.append(torch.stack([unpad_output(layer, image, self.model.merge_unit) for layer in stacked]))
            seconds = call.seconds + call.host_seconds
            stats.images.append(ImageStats(grid, patches, bucket, seconds))
        return VisualFeatures(torch.cat(outputs), torch.cat(deepstack, dim=1) if deepstack else None, stats)


def _stored_model(data, origin: str) -> VisualModelConfig:
    """The vision tower facts stored in visual_config.json, with their types and ranges checked."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(VisualModelConfig)}
    if not isinstance(data, dict) or set(data) - fields or {"kind", "depth", "embed_dim", "num_heads"} - set(data):
        raise ArtifactError(f"{origin}: 'model' must be an object with the fields {sorted(fields)}; {_FIX}")
    if data["kind"] not in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        raise ArtifactError(f"{origin}: model.kind={str(data['kind'])[:80]!r} is not a supported vision tower; {_FIX}")
    for key, value in data.items():
        if key == "kind":
            continue
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and len(value) > 4096 or any(
                not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in values):
            raise ArtifactError(f"{origin}: model.{key}={str(value)[:80]} must be a non-negative integer"
                                f"{' list' if isinstance(value, list) else ''}; {_FIX}")
    for key in ("depth", "embed_dim", "num_heads", "out_hidden_size", "patch_size", "temporal_patch_size",
                "in_channels", "spatial_merge_size"):
        if data.get(key, 1) < 1:
            raise ArtifactError(f"{origin}: model.{key}={data[key]} must be >= 1; {_FIX}")
    try:
        return VisualModelConfig.from_dict(data)
    except TypeError as err:
        raise ArtifactError(f"{origin}: 'model' is incomplete ({err}); {_FIX}") from None
