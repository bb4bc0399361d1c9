"""What the simulated NPU reports after a generate() call: time per phase, buckets, memory."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from optimum_npu.device.memory import format_bytes
from optimum_npu.runtime.moe_stats import Routing, experts_activated, load_imbalance, mean_of


@dataclass(frozen=True)
class StepRecord:
    """One graph call: which graph, how many real rows/tokens it carried, its simulated time, and the routing of
    its MoE layers (``runtime/moe_stats.py``; empty for a dense model)."""

    phase: str
    graph: str
    active: int
    tokens: int
    seconds: float
    attention_seconds: float
    host_seconds: float
    routing: Routing = ()


@dataclass
class NPUStats:
    """Simulated NPU figures of the last generate() (or forward) call.

    ``ttft_s`` is the simulated time until the first token of every sequence is known
    (all prefills); ``decode_s_per_token`` is the mean time of one decode step;
    ``tokens_per_s`` is generated tokens over the simulated decode time.
    """

    device: str
    spec: str
    memory: dict[str, int] = field(default_factory=dict)
    memory_capacity: int = 0
    steps: list[StepRecord] = field(default_factory=list)
    sequences: int = 0
    prefix_hit_tokens: int = 0
    kv_blocks_total: int = 0
    kv_blocks_peak: int = 0
    kv_pools: dict[str, int] = field(default_factory=dict)
    tensor_parallel_size: int = 1
    visual: Any = None  # VisualStats of a vision-language model's prefill (bucket per image, padding)
    #: Simulated time to each row's first token (rows prefill one after another, so row i waits for rows < i).
    request_ttft_s: list[float] = field(default_factory=list)

    def record(self, step: StepRecord) -> None:
        self.steps.append(step)

    def _phase(self, phase: str) -> list[StepRecord]:
        return [s for s in self.steps if s.phase == phase]

    @property
    def prefill_s(self) -> float:
        return sum(s.seconds + s.host_seconds for s in self._phase("prefill"))

    @property
    def ttft_s(self) -> float:
        """Simulated time to the first tokens: visual encoding (multimodal models) and every prefill."""
        return self.prefill_s + (self.visual.seconds if self.visual is not None else 0.0)

    @property
    def decode_steps(self) -> int:
        return len(self._phase("decode"))

    @property
    def decode_s(self) -> float:
        return sum(s.seconds + s.host_seconds for s in self._phase("decode"))

    @property
    def decode_s_per_token(self) -> float:
        return self.decode_s / self.decode_steps if self.decode_steps else 0.0

    @property
    def tokens_per_s(self) -> float:
        """Decode throughput: tokens produced by decode steps per simulated second."""
        return sum(s.active for s in self._phase("decode")) / self.decode_s if self.decode_s else 0.0

    def experts_activated_per_step(self, phase: str = "decode") -> float | None:
        """Mixture of experts: mean experts activated per MoE layer in one step of ``phase`` (None: dense)."""
        return mean_of(experts_activated(s.routing) for s in self._phase(phase))

    def expert_load_imbalance(self, phase: str = "decode") -> float | None:
        """Expert parallelism: mean max / mean tokens per device over the MoE layers of ``phase`` (None: no EP)."""
        return mean_of(load_imbalance(s.routing) for s in self._phase(phase))

    @property
    def buckets(self) -> Counter:
        return Counter(s.graph for s in self.steps)

    def to_dict(self) -> dict:
        return {
            "device": self.device, "spec": self.spec, "sequences": self.sequences,
            "tensor_parallel_size": self.tensor_parallel_size,
            **({"visual_buckets": [image.bucket for image in self.visual.images],
                "visual_padding_waste": self.visual.padding_waste, "visual_ms": self.visual.seconds * 1e3}
               if self.visual is not None else {}),
            "ttft_ms": self.ttft_s * 1e3, "decode_ms_per_token": self.decode_s_per_token * 1e3,
            "tokens_per_s": self.tokens_per_s, "prefill_chunks": len(self._phase("prefill")),
            "decode_steps": self.decode_steps, "buckets": dict(self.buckets),
            "memory_bytes": dict(self.memory), "memory_capacity_bytes": self.memory_capacity,
            "prefix_hit_tokens": self.prefix_hit_tokens, "kv_blocks_peak": self.kv_blocks_peak,
            "kv_blocks_total": self.kv_blocks_total, "kv_pool_bytes": dict(self.kv_pools),
            **({f"{phase}_experts_activated": self.experts_activated_per_step(phase) for phase in ("prefill", "decode")}
               | {f"{phase}_expert_load_imbalance": self.expert_load_imbalance(phase) for phase in ("prefill", "decode")}
               if any(s.routing for s in self.steps) else {}),
        }

    def __str__(self) -> str:
        used = sum(self.memory.values())
        lines = [
            f"simulated NPU: {self.device}",
            f"  TTFT (all prefills)     {self.ttft_s * 1e3:10.3f} ms   ({_count(len(self._phase('prefill')), 'prefill chunk')})",
            f"  decode                  {self.decode_s_per_token * 1e3:10.3f} ms/step ({self.decode_steps} steps)",
            f"  decode throughput       {self.tokens_per_s:10.1f} tokens/s",
            "  graphs used             " + ", ".join(f"{g} x{n}" for g, n in sorted(self.buckets.items())),
            f"  memory per device       {format_bytes(used)} of {format_bytes(self.memory_capacity)}"
            f" ({100 * used / max(self.memory_capacity, 1):.2f}%)"
            + (f" x {self.tensor_parallel_size} devices" if self.tensor_parallel_size > 1 else ""),
        ]
        if len(self.request_ttft_s) > 1:
            ordered = sorted(self.request_ttft_s)
            lines.insert(2, f"  TTFT per request        {ordered[(len(ordered) - 1) // 2] * 1e3:10.3f} ms p50, "
                            f"{ordered[-1] * 1e3:.3f} ms max ({len(ordered)} requests prefilled in turn)")
        lines += [f"    {category:<10} {format_bytes(nbytes):>12}" for category, nbytes in self.memory.items()]
        lines.append(f"  paged KV pool           {self.kv_blocks_peak} of {self.kv_blocks_total} blocks used at peak"
                     f" ({format_bytes(self.kv_pools.get('paged', 0))})")
        if self.kv_pools.get("sliding"):
            lines.append(f"  sliding-window rings    {format_bytes(self.kv_pools['sliding'])}")
        if self.visual is not None:
            buckets = ", ".join(f"{image.patches}->{image.bucket}" for image in self.visual.images)
            lines.append(f"  visual encoder          {self.visual.seconds * 1e3:10.3f} ms   (patches->bucket: {buckets};"
                         f" padding waste {100 * self.visual.padding_waste:.1f}%)")
        for phase in ("prefill", "decode"):
            activated, imbalance = self.experts_activated_per_step(phase), self.expert_load_imbalance(phase)
            if activated is not None:
                lines.append(f"  experts per layer       {activated:10.2f} activated per {phase} step"
                             + (f", load imbalance {imbalance:.2f} (max/mean tokens per device)"
                                if imbalance is not None else ""))
        if self.prefix_hit_tokens:
            lines.append(f"  prefix cache hits       {self.prefix_hit_tokens} tokens not prefilled")
        return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    """``"1 prefill chunk"``, ``"3 prefill chunks"``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
