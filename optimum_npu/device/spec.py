"""Hardware specs of the simulated NPU: named presets from public figures, or a JSON file.

Units are SI: bytes, bytes/s, FLOP/s, seconds. Where a vendor quotes a figure that the
simulator needs but does not publish (fp32 throughput of an fp16 NPU, link latency), the
value here is an assumption and says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

GB = 10**9
GiB = 2**30
MB = 10**6
TFLOPS = 10**12


@dataclass(frozen=True)
class NPUSpec:
    """One simulated device type. All devices of a simulated node share the spec."""

    name: str
    dram_bytes: int
    dram_bandwidth: float
    sram_bytes: int
    peak_flops: dict[str, float] = field(hash=False)
    link_bandwidth: float
    link_latency_s: float
    host_link_bandwidth: float
    devices_per_node: int
    source: str = ""

    def peak_flops_for(self, dtype: str) -> float:
        """Peak dense FLOP/s for a compute dtype; integers and unknown types fall back to float16."""
        return self.peak_flops.get(dtype) or self.peak_flops["float16"]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, origin: str = "spec") -> "NPUSpec":
        """Builds and validates a spec; ``origin`` names the source in error messages.

        A spec may come from an artifact (``npu_spec`` in ``npu_config.json``) or a user's JSON file:
        every field is checked for its type and range (finite, positive numbers; no booleans).
        """
        if not isinstance(data, dict):
            raise ValueError(f"NPU spec {origin}: must be a JSON object with the fields of "
                             f"optimum_npu.device.spec.NPUSpec, got {type(data).__name__}")
        required = {f for f in cls.__dataclass_fields__ if f != "source"}
        missing = sorted(required - set(data))
        unknown = sorted(str(key) for key in set(data) - set(cls.__dataclass_fields__))
        if missing or unknown:
            raise ValueError(
                f"NPU spec {origin}: missing fields {missing}, unknown fields {unknown}; "
                f"a spec needs exactly {sorted(required)} (plus optional 'source')"
            )
        for key in ("name", "source"):
            value = data.get(key, "")
            if not isinstance(value, str) or len(value) > MAX_TEXT_CHARS or (key == "name" and not value):
                raise ValueError(f"NPU spec {origin}: {key}={_short(value)} must be a "
                                 f"{'non-empty ' if key == 'name' else ''}string of at most {MAX_TEXT_CHARS} "
                                 "characters")
        for key in ("dram_bytes", "dram_bandwidth", "link_bandwidth", "host_link_bandwidth", "devices_per_node"):
            if not _is_number(data[key]) or data[key] <= 0:
                raise ValueError(f"NPU spec {origin}: {key}={_short(data[key])} must be a positive number")
        for key in ("sram_bytes", "link_latency_s"):
            if not _is_number(data[key]) or data[key] < 0:
                raise ValueError(f"NPU spec {origin}: {key}={_short(data[key])} must be a number >= 0")
        for key in ("dram_bytes", "sram_bytes", "devices_per_node"):
            if data[key] != int(data[key]):
                raise ValueError(f"NPU spec {origin}: {key}={data[key]!r} must be a whole number")
        if data["devices_per_node"] > MAX_DEVICES_PER_NODE:
            raise ValueError(f"NPU spec {origin}: devices_per_node={data['devices_per_node']!r} must be at most "
                             f"{MAX_DEVICES_PER_NODE}")
        peaks = data["peak_flops"]
        if (not isinstance(peaks, dict) or not 1 <= len(peaks) <= MAX_PEAK_ENTRIES
                or not _is_number(peaks.get("float16")) or peaks["float16"] <= 0):
            raise ValueError(
                f"NPU spec {origin}: peak_flops={_short(peaks)} must be a mapping of dtype to FLOP/s with a positive "
                "'float16' entry, e.g. {\"float16\": 3.2e13, \"float32\": 1.6e13}"
            )
        for dtype, value in peaks.items():
            if not isinstance(dtype, str) or len(dtype) > 32 or not _is_number(value) or value <= 0:
                raise ValueError(f"NPU spec {origin}: peak_flops[{_short(dtype)}]={_short(value)} must be a positive "
                                 "number of FLOP/s keyed by a dtype name")
        return cls(**{**data, "dram_bytes": int(data["dram_bytes"]), "sram_bytes": int(data["sram_bytes"]),
                      "devices_per_node": int(data["devices_per_node"]), "peak_flops": dict(peaks)})


#: Bounds on figures a spec may carry (a spec can come from an untrusted artifact).
MAX_TEXT_CHARS = 1000
MAX_DEVICES_PER_NODE = 1024
MAX_PEAK_ENTRIES = 32
MAX_SPEC_FILE_BYTES = 1 << 20


def _is_number(value) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# fp32 rates below marked "assumed" are not published for these parts: taken as half the
# fp16/bf16 dense rate, which is what running fp32 as two 16-bit passes would give.
PRESETS: dict[str, NPUSpec] = {
    spec.name: spec
    for spec in (
        NPUSpec(
            name="atom", dram_bytes=16 * GB, dram_bandwidth=256 * GB, sram_bytes=64 * MB,
            peak_flops={"float16": 32 * TFLOPS, "bfloat16": 32 * TFLOPS, "int8": 128 * TFLOPS,
                        "float32": 16 * TFLOPS},  # fp32 assumed
            link_bandwidth=64 * GB, link_latency_s=2e-6,  # latency assumed (PCIe switch hop)
            host_link_bandwidth=64 * GB, devices_per_node=8,
            source="Rebellions ATOM (RBLN-CA12) product brief: FP16 32 TFLOPS, INT8 128 TOPS, 16 GB GDDR6 "
                   "256 GB/s, 64 MB on-chip SRAM, PCIe Gen5 x16",
        ),
        NPUSpec(
            name="rebel-quad", dram_bytes=144 * GB, dram_bandwidth=4.8e12, sram_bytes=256 * MB,  # SRAM assumed
            peak_flops={"float16": 1e15, "bfloat16": 1e15, "float8": 2e15, "int8": 2e15, "float32": 5e14},
            link_bandwidth=128 * GB, link_latency_s=2e-6, host_link_bandwidth=64 * GB, devices_per_node=8,
            source="Rebellions REBEL-Quad announcement: FP16 1 PFLOPS dense, FP8 2 PFLOPS, 144 GB HBM3E "
                   "4.8 TB/s, PCIe Gen5 x16 x2",
        ),
        NPUSpec(
            name="rngd", dram_bytes=48 * GB, dram_bandwidth=1.5e12, sram_bytes=256 * MB,
            peak_flops={"bfloat16": 256 * TFLOPS, "float16": 256 * TFLOPS, "float8": 512 * TFLOPS,
                        "int8": 512 * TFLOPS, "float32": 128 * TFLOPS},
            link_bandwidth=64 * GB, link_latency_s=2e-6, host_link_bandwidth=64 * GB, devices_per_node=8,
            source="FuriosaAI RNGD product page: BF16 256 TFLOPS, FP8/INT8 512, 48 GB HBM3 1.5 TB/s, "
                   "256 MB SRAM, PCIe Gen5 x16, 150-180 W",
        ),
        NPUSpec(
            name="inferentia2", dram_bytes=32 * GiB, dram_bandwidth=820 * GiB, sram_bytes=0,
            peak_flops={"bfloat16": 190 * TFLOPS, "float16": 190 * TFLOPS, "float32": 95 * TFLOPS},
            link_bandwidth=192 * GiB, link_latency_s=2e-6, host_link_bandwidth=32 * GB, devices_per_node=12,
            source="AWS Inferentia2 documentation: BF16 190 TFLOPS, 32 GiB HBM 820 GiB/s, NeuronLink 192 GiB/s",
        ),
        NPUSpec(
            name="a100-40gb", dram_bytes=40 * GB, dram_bandwidth=1.555e12, sram_bytes=0,
            peak_flops={"bfloat16": 312 * TFLOPS, "float16": 312 * TFLOPS, "float32": 19.5 * TFLOPS},
            link_bandwidth=300 * GB, link_latency_s=2e-6, host_link_bandwidth=32 * GB, devices_per_node=8,
            source="NVIDIA A100 datasheet: BF16 312 TFLOPS, FP32 19.5 TFLOPS, 40 GB HBM2 1.555 TB/s, "
                   "NVLink 600 GB/s bidirectional",
        ),
        NPUSpec(
            name="a100-80gb", dram_bytes=80 * GB, dram_bandwidth=2.039e12, sram_bytes=0,
            peak_flops={"bfloat16": 312 * TFLOPS, "float16": 312 * TFLOPS, "float32": 19.5 * TFLOPS},
            link_bandwidth=300 * GB, link_latency_s=2e-6, host_link_bandwidth=32 * GB, devices_per_node=8,
            source="NVIDIA A100 datasheet: BF16 312 TFLOPS, 80 GB HBM2e 2.039 TB/s, NVLink 600 GB/s bidirectional",
        ),
        NPUSpec(
            name="h100-sxm", dram_bytes=80 * GB, dram_bandwidth=3.35e12, sram_bytes=0,
            peak_flops={"bfloat16": 989 * TFLOPS, "float16": 989 * TFLOPS, "float8": 1979 * TFLOPS,
                        "float32": 67 * TFLOPS},
            link_bandwidth=450 * GB, link_latency_s=2e-6, host_link_bandwidth=64 * GB, devices_per_node=8,
            source="NVIDIA H100 datasheet: BF16 989 TFLOPS dense, FP32 67 TFLOPS, 80 GB HBM3 3.35 TB/s, "
                   "NVLink 900 GB/s bidirectional",
        ),
        NPUSpec(
            name="h200-sxm", dram_bytes=141 * GB, dram_bandwidth=4.8e12, sram_bytes=0,
            peak_flops={"bfloat16": 989 * TFLOPS, "float16": 989 * TFLOPS, "float8": 1979 * TFLOPS,
                        "float32": 67 * TFLOPS},
            link_bandwidth=450 * GB, link_latency_s=2e-6, host_link_bandwidth=64 * GB, devices_per_node=8,
            source="NVIDIA H200 product page / datasheet (H200 SXM): 141 GB HBM3e 4.8 TB/s, BF16 989 TFLOPS "
                   "dense (1,979 with sparsity), FP8 1,979 dense, FP32 67 TFLOPS, NVLink 900 GB/s bidirectional, "
                   "PCIe Gen5 128 GB/s bidirectional",
        ),
    )
}


def resolve_spec(name_or_path: str) -> NPUSpec:
    """A preset by name, or a custom spec from a ``.json`` file path."""
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]
    path = Path(name_or_path)
    if path.suffix == ".json":
        if not path.is_file():
            raise ValueError(f"npu={name_or_path!r}: spec file not found; give a preset name {sorted(PRESETS)} "
                             "or the path of an existing JSON spec file")
        from optimum_npu.untrusted import load_json

        data = load_json(path, what=f"npu={name_or_path!r}: spec file", max_bytes=MAX_SPEC_FILE_BYTES)
        return NPUSpec.from_dict(data, origin=str(path))
    raise ValueError(f"npu={name_or_path!r} is not a known preset; choose one of {sorted(PRESETS)} "
                     "or pass the path of a JSON spec file (fields: see optimum_npu.device.spec.NPUSpec)")
