"""Seconds per image and memory per device of a pipeline, from weightless (meta) captures of its real shapes.

``estimate_pipeline`` builds each component from its config on the ``meta`` device (no weights), captures
its bucket graphs through the same compile pipeline as an export (``compile.pipeline.run_pipeline`` with
``with_weights=False``), and costs them with the same ``GraphCostModel`` the device engine charges at run
time, host copies included. A call of the pipeline runs each text encoder twice with guidance (prompt and
negative prompt, as Diffusers does) and once without, the denoiser once per step, the VAE decoder once.
On a compiled tiny pipeline the estimate equals the simulated time ``npu_stats`` reports for the same call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from optimum_npu.compile.pipeline import Compiled, run_pipeline
from optimum_npu.device.cost import GraphCostModel
from optimum_npu.device.ops import nbytes
from optimum_npu.device.spec import NPUSpec, resolve_spec
from optimum_npu.models.diffusion.export import capture_component
from optimum_npu.models.diffusion.npu_config import NPUDiffusionConfig
from optimum_npu.models.diffusion.plan import ComponentPlan, component_plans
from optimum_npu.models.diffusion.parallel import component_split
from optimum_npu.schema import Graph


@dataclass(frozen=True)
class ComponentEstimate:
    """One component: simulated seconds of one call of each bucket graph, and bytes per device it holds."""

    name: str
    seconds_per_call: dict[str, float]
    memory: dict[str, int]
    devices: int


@dataclass(frozen=True)
class PipelineEstimate:
    """The estimate of one pipeline call (``batch_size`` images at one resolution, ``steps`` steps) on ``npu``."""

    npu: str
    resolution: tuple[int, int]
    steps: int
    guidance: bool
    batch_size: int
    components: dict[str, ComponentEstimate]
    seconds_by_component: dict[str, float] = field(default_factory=dict)

    @property
    def seconds_per_call(self) -> float:
        return sum(self.seconds_by_component.values())

    @property
    def seconds_per_image(self) -> float:
        return self.seconds_per_call / self.batch_size

    def memory_per_device(self, placement: dict[str, list[int]]) -> dict[int, int]:
        """Bytes on each device with the components placed as given (default: everything on device 0)."""
        totals: dict[int, int] = {}
        for name, component in self.components.items():
            devices = placement.get(name, list(range(component.devices)))
            for device in devices:
                totals[device] = totals.get(device, 0) + sum(component.memory.values())
        return totals


def _call_seconds(graph: Graph, cost: GraphCostModel, spec: NPUSpec) -> float:
    """What ``DeviceEngine.run`` charges for one call: device time plus the host copies of inputs and outputs."""
    moved = sum(nbytes(s.shape, s.dtype) for s in graph.inputs_of_kind("input"))
    moved += sum(nbytes(*cost.index.shapes[name]) for name in graph.outputs if name in cost.index.shapes)
    return cost.call(None, 0, 0).seconds + moved / spec.host_link_bandwidth


def capture_weightless(plans: list[ComponentPlan], dtype: str) -> dict[str, Compiled]:
    """Each component's bucket graphs through the compile pipeline, without weights (once for every target)."""
    captured = {}
    for plan in plans:
        size = plan.tensor_parallel_size
        captured[plan.folder] = run_pipeline(lambda p=plan: capture_component(p, getattr(torch, dtype)),
                                             component_split(plan.kind, plan.module, size), with_weights=False)
    return captured


def cost_component(name: str, compiled: Compiled, spec: NPUSpec, dtype: str) -> ComponentEstimate:
    """Seconds per call of each graph of a captured component on ``spec``, and the bytes one device holds."""
    costs = compiled.cost_models(spec, dtype)
    seconds = {graph_name: _call_seconds(graph, costs[graph_name], spec) for graph_name, graph in compiled.graphs.items()}
    request = compiled.memory.request()
    if compiled.tensor_parallel_size == 1:
        request.pop("collective_buffers", None)
    return ComponentEstimate(name, seconds, request, compiled.tensor_parallel_size)


def estimate_pipeline(pipe: Any, config: NPUDiffusionConfig, steps: int, guidance: bool | None = None,
                      resolution: tuple[int, int] | None = None,
                      npus: tuple[str, ...] | None = None) -> list[PipelineEstimate]:
    """Estimates one call of ``pipe`` (a Diffusers pipeline or a stand-in with its components on ``meta``).

    Args:
        pipe: the pipeline: components with ``config``, tokenizers with ``model_max_length``.
        config: resolved compile knobs (the first resolution and guidance mode are estimated by default).
        steps: denoising steps per call.
        guidance: classifier-free guidance (default: the first compiled mode).
        resolution: the (height, width) estimated (default: the first compiled one).
        npus: the targets (default: ``config.npu``); the graphs are captured once for all of them.
    Returns:
        One estimate per target, in order.
    """
    guided = config.guidance[0] if guidance is None else guidance
    height, width = resolution or config.resolutions[0]
    plans = component_plans(pipe, config, with_vae_encoder=False)
    captured = capture_weightless(plans, config.dtype)
    rows = config.batch_size * (2 if guided else 1)
    results = []
    for npu in npus or (config.npu,):
        spec = resolve_spec(npu)
        components = {plan.folder: cost_component(plan.folder, captured[plan.folder], spec, config.dtype)
                      for plan in plans}
        seconds: dict[str, float] = {}
        for plan in plans:
            calls = components[plan.folder].seconds_per_call
            if plan.kind == "text_encoder":
                seconds[plan.folder] = next(iter(calls.values())) * (2 if guided else 1)
            elif plan.kind in ("unet", "transformer"):
                seconds[plan.folder] = calls[f"{plan.kind}_b{rows}_h{height}_w{width}"] * steps
            else:
                seconds[plan.folder] = calls[f"{plan.kind}_b{config.batch_size}_h{height}_w{width}"]
        results.append(PipelineEstimate(spec.name, (height, width), steps, guided, config.batch_size, components,
                                        seconds))
    return results
